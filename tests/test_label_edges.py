"""Labeling at the edges users walk next to the tested paths: images read where they are sent (not
in the driver), a credential inside ``--base-url``, and two runs into one folder at once; against
the loopback OpenAI-compatible server.

    flock /tmp/rayplatform-heavy.lock .venv/bin/python -m pytest tests/test_label_edges.py
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pandas as pd
import pytest
from helpers import last_line
from labeling import KEY, PRICES, label, start_label, write_posts
from openai_server import FakeOpenAI
from PIL import Image


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:g}s for {what}"
        time.sleep(0.05)


def test_images_rewritten_after_the_scan_are_read_by_the_actors_and_never_sent_under_their_old_key(tmp_path, ray_address):
    captions = [f"a post read late {i}" for i in range(12)]
    folder = write_posts(tmp_path, captions)
    with FakeOpenAI(key=KEY) as server:
        args = [str(folder), "--base-url", server.url, *PRICES, "--rps", "20", "--concurrency", "1", "--actors", "1"]
        # One actor and one request at a time: while the first answer is held, the rows of the
        # batches not started yet have not been read.
        server.hold_after(0)
        driver = start_label(*args, address=ray_address, output=subprocess.PIPE)
        try:
            wait_for(lambda: server.held() > 0 or driver.poll() is not None, 120, "the first request")
            for i in range(len(captions)):  # every picture replaced by another
                Image.new("RGB", (8, 8), (250, 20, i)).save(folder / "images" / f"p{i}.jpg")
        finally:
            server.release()
        stdout, stderr = driver.communicate(timeout=120)
        assert driver.returncode == 0, stderr[-3000:]
        first_calls = [c["caption"] for c in server.calls]
        labels = pd.read_csv(folder / "labeled" / "labels.csv", dtype={"post_id": str})
        quarantine = pd.read_csv(folder / "labeled" / "quarantine.csv", dtype={"post_id": str})
        rerun = label(*args, address=ray_address)
        rerun_calls = [c["caption"] for c in server.calls[len(first_calls) :]]
    # The driver read the old pictures to plan. Rows whose actor read theirs before the rewrite
    # were asked; the others found a picture the key was not made of: not sent, not cached,
    # quarantined for this run only.
    changed = sorted(quarantine["caption"])
    assert changed and sorted(labels["caption"]) == sorted(first_calls) == sorted(set(captions) - set(changed))
    for row in quarantine.itertuples():
        image = folder / "images" / f"{row.post_id}.jpg"
        assert row.reason == f"changed_image: {image} changed after the scan (run again to label what it holds now)" and row.attempts == 0
    assert f"{len(changed)} quarantined (changed_image {len(changed)})" in stdout
    # Run again: the new pictures are scanned, keyed and asked about, every one (new content, new key).
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert sorted(rerun_calls) == sorted(captions)
    labels = pd.read_csv(folder / "labeled" / "labels.csv", dtype={"post_id": str})
    assert sorted(labels["caption"]) == sorted(captions) and not labels["cached"].any()


def test_a_base_url_carrying_a_credential_is_refused_and_the_credential_never_shown(tmp_path):
    folder = write_posts(tmp_path, ["a post", "another post"])
    secret = "sk-in-the-url-0123456789"
    with FakeOpenAI(key=KEY) as server:
        address = server.url.removeprefix("http://")
        refused = [
            (f"http://user:{secret}@{address}", f"http://***@{address}", "a user:password@ part"),
            (f"http://{secret}@{address}", f"http://***@{address}", "a user:password@ part"),
            (f"{server.url}?api_key={secret}", f"{server.url}?***", "a query string"),
        ]
        for url, shown, where in refused:
            # --dry-run and a real run alike: refused before anything is read, written or sent.
            for result in (
                label(str(folder), "--base-url", url, *PRICES, "--dry-run", key=None),
                label(str(folder), "--base-url", url, *PRICES),
            ):
                assert result.returncode == 2, (url, result.stdout, result.stderr[-2000:])
                assert last_line(result.stderr) == (
                    f"error: --base-url '{shown}' carries {where}: give the API without it and the key in OPENROUTER_API_KEY "
                    "(or OPENAI_API_KEY), never in the URL (it would be written to ledger.json)"
                )
                assert secret not in result.stdout + result.stderr
        # A password holding / or @: refused (the first is no URL at all), the password shown nowhere.
        for url in (f"http://me:{secret}/x@{address}/v1", f"http://me:{secret}@y@{address}/v1"):
            result = label(str(folder), "--base-url", url, *PRICES, "--dry-run", key=None)
            assert result.returncode == 2 and last_line(result.stderr).startswith(f"error: --base-url 'http://***@{address}/v1'")
            assert secret not in result.stdout + result.stderr and "/x@" not in result.stderr and "@y@" not in result.stderr
        assert server.call_count == 0 and not server.files
    assert not (folder / "labeled").exists()


def two_runs_at_once(folder, server: FakeOpenAI, *args: str, address: str | None = None) -> tuple[list, list]:
    """The same command twice, started together: (the processes, their stdout and stderr). No
    request is answered and no batch ends until one of them has ended, or both have sent."""
    server.hold_after(0)
    polls, server.batch_polls = server.batch_polls, 10**6
    command = [str(folder), "--base-url", server.url, *PRICES, *args]
    drivers = [start_label(*command, address=address, output=subprocess.PIPE) for _ in range(2)]
    try:
        # More requests waiting than one run sends at a time (--concurrency 2), or a second batch: both sent.
        wait_for(
            lambda: any(d.poll() is not None for d in drivers) or server.held() > 2 or len(server.batches) > 1, 120, "a run to be refused"
        )
    finally:
        server.batch_polls = polls
        server.release()
    return drivers, [d.communicate(timeout=180) for d in drivers]


def assert_one_ran_and_one_was_refused(drivers, outputs, out) -> None:
    codes = [d.returncode for d in drivers]
    assert sorted(codes) == [0, 2], [o[1][-2000:] for o in outputs]
    ran, refused = (0, 1) if codes[0] == 0 else (1, 0)
    assert last_line(outputs[refused][1]) == (
        f"error: another labeling run (pid {drivers[ran].pid}) is writing into {out}: "
        "wait for it to end (running again then pays only for what it left)"
    )
    assert outputs[refused][0] == ""  # refused before its first line: nothing planned, nothing sent


def test_a_label_run_and_its_rerun_started_together_pay_once_and_keep_one_set_of_outputs(tmp_path, ray_address):
    captions = [f"a twice started post {i}" for i in range(6)]
    folder = write_posts(tmp_path, captions)
    with FakeOpenAI(key=KEY) as server:
        drivers, outputs = two_runs_at_once(folder, server, "--rps", "20", "--concurrency", "2", address=ray_address)
        calls = [c["caption"] for c in server.calls]
    assert_one_ran_and_one_was_refused(drivers, outputs, folder / "labeled")
    assert sorted(calls) == sorted(captions)  # each row paid once
    labels = pd.read_csv(folder / "labeled" / "labels.csv")
    assert sorted(labels["caption"]) == sorted(captions) and not labels["cached"].any()
    ledger = json.loads((folder / "labeled" / "ledger.json").read_text())
    assert ledger["runs"] == 1 and ledger["totals"]["requests"] == len(captions)  # the refused run left no log


def test_two_batch_runs_started_together_create_one_batch(tmp_path):
    captions = [f"a twice batched post {i}" for i in range(4)]
    folder = write_posts(tmp_path, captions)
    with FakeOpenAI(key=KEY) as server:
        drivers, outputs = two_runs_at_once(folder, server, "--batch", "--poll", "0.2")
        batches, uploads = len(server.batches), sum(f["purpose"] == "batch" for f in server.files.values())
        paid = [line["caption"] for line in server.batch_lines if line["status"] == 200]
    assert_one_ran_and_one_was_refused(drivers, outputs, folder / "labeled")
    assert batches == 1 and uploads == 1 and sorted(paid) == sorted(captions)
    state = json.loads((folder / "labeled" / "batches.json").read_text())
    assert [b["status"] for b in state["batches"]] == ["completed"]


@pytest.mark.parametrize("where", ["out", "cache"])
def test_a_run_into_the_out_or_cache_folder_a_job_holds_is_refused_and_a_dry_run_is_not(tmp_path, where):
    from platform.label import lock

    folder = write_posts(tmp_path / "posts", ["a post"])
    held = folder / "labeled" if where == "out" else tmp_path / "shared-cache"
    with lock.hold(held):  # as a running job holds it
        dry = label(str(folder), "--cache", str(tmp_path / "shared-cache"), "--dry-run", key=None)
        refused = label(str(folder), "--cache", str(tmp_path / "shared-cache"))
    assert dry.returncode == 0 and "would send 1 requests" in dry.stdout
    assert refused.returncode == 2
    assert last_line(refused.stderr).startswith(f"error: another labeling run (pid {os.getpid()}) is writing into {held}: ")
