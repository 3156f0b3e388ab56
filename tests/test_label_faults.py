"""Labeling under faults a user cannot see coming: Labeler actors killed mid-run, the API key kept
out of Ray, a tokens-per-minute limit, a dropped connection, a day-long Retry-After and
decompression bombs; against the loopback OpenAI-compatible server.

    .venv/bin/python -m pytest tests/test_label_faults.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, TEST_ENV, last_line, png_header_only
from labeling import KEY, PRICES, assert_key_nowhere, label, max_in_window, start_label, write_posts
from openai_replies import COMPLETION_TOKENS, PROMPT_TOKENS
from openai_server import FakeOpenAI


def labeler_pids(address: str) -> list[int]:
    """The processes of the live Labeler actors (Ray Data's MapWorker(MapBatches(Labeler)))."""
    from ray.util.state import list_actors

    return [
        actor.pid
        for actor in list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=10_000)
        if "Labeler" in actor.class_name
    ]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:g}s for {what}"
        time.sleep(0.05)


def kill_labelers_mid_run(folder: Path, address: str, rows: int, concurrency: int) -> dict:
    """Labels ``rows`` posts and SIGKILLs every Labeler actor once five rows are answered and the
    next calls are in flight, with no answer on its way (the server holds them until the kill)."""
    captions = [f"sturdy post {i}" for i in range(rows)]
    write_posts(folder, captions)
    in_flight = min(concurrency, rows - 5)
    with FakeOpenAI(key=KEY, latency=0.2) as server:
        # Since 5 is no multiple of the 4 rows a batch has, a batch still running holds an answered row.
        server.hold_after(5)
        args = [str(folder), "--base-url", server.url, *PRICES, "--rps", "20", "--concurrency", str(concurrency), "--actors", "2"]
        driver = start_label(*args, "--timeout", "30", address=address, output=subprocess.PIPE)
        try:
            wait_for(
                lambda: (server.held() == in_flight and len(server.delivered()) == 5) or driver.poll() is not None,
                120,
                "five answers and the next calls in flight",
            )
            time.sleep(0.5)  # the five answers reach the gate
            pids = labeler_pids(address)
            assert pids and driver.poll() is None
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            time.sleep(1.0)  # the server sees their connections closed
            server.release()
            stdout, stderr = driver.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the job hung after its actors died: {server.call_count} calls, {len(server.delivered())} answered")
        finally:
            server.release()
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.communicate()
        calls = list(server.calls)
    assert driver.returncode == 0, stderr[-3000:]
    labels = pd.read_csv(folder / "labeled" / "labels.csv")
    assert sorted(labels["caption"]) == sorted(captions)
    lost = [c["caption"] for c in calls if not c["delivered"]]
    assert len(lost) == in_flight  # the answers the killed actors never read: asked again
    ledger = json.loads((folder / "labeled" / "ledger.json").read_text())
    return {"captions": captions, "calls": calls, "lost": lost, "ledger": ledger}


def test_a_labeler_actor_killed_mid_batch_pays_once_for_each_row(tmp_path, ray_address):
    # Slots to spare (--concurrency 64): only what Ray Data's re-run of the batches sends matters.
    run = kill_labelers_mid_run(tmp_path / "posts", ray_address, rows=8, concurrency=64)
    calls, captions = run["calls"], run["captions"]
    paid = [c["caption"] for c in calls if c["status"] == 200 and c["delivered"]]
    assert sorted(paid) == sorted(captions)  # one well-formed answer a row, over the whole job
    assert sorted(c["caption"] for c in calls) == sorted(captions + run["lost"])
    # The restarted actors re-ran their batches and found answered rows: not sent again.
    assert run["ledger"]["resends_avoided"] >= 1 and run["ledger"]["rows"]["labeled_now"] == len(captions)
    assert run["ledger"]["requests"] == len(calls) - len(run["lost"])  # what reported back


def test_labeler_actors_killed_holding_every_slot_give_them_back(tmp_path, ray_address):
    # --concurrency 2: the killed actors hold both slots; kept, the restarted ones would wait forever.
    run = kill_labelers_mid_run(tmp_path / "posts", ray_address, rows=24, concurrency=2)
    paid = [c["caption"] for c in run["calls"] if c["status"] == 200 and c["delivered"]]
    assert sorted(paid) == sorted(run["captions"])
    # The two in flight, and any the dead processes' queued requests took before the gate knew.
    assert run["ledger"]["slots_taken_back"] >= 2


def scan_for_key(root: Path) -> list[str]:
    """Files under ``root`` holding the key's bytes (sockets and files gone meanwhile skipped)."""
    found = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and KEY.encode() in path.read_bytes():
                found.append(str(path))
        except OSError:
            continue
    return found


def test_the_key_reaches_the_actors_but_never_the_object_store_or_the_session_files(tmp_path):
    import ray

    folder = write_posts(tmp_path / "posts", [f"secret post {i}" for i in range(6)])
    ray_tmp = Path(tempfile.mkdtemp(prefix="rk-", dir="/tmp"))  # a short path: Ray's sockets live there
    spill = ray_tmp / "spilled"
    # A Ray of the job's own (the key in the driver's environment, as on a laptop) that spills
    # every object it can to a folder read while the job runs: what Ray is handed reaches disk.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        TEST_ENV,
        OPENROUTER_API_KEY=KEY,
        RAY_TMPDIR=str(ray_tmp),
        RAY_object_spilling_directory=str(spill),
        RAY_object_spilling_threshold="0.0",
        RAY_min_spilling_size="0",
    )
    spilled, found = set(), set()
    try:
        with FakeOpenAI(key=KEY, latency=0.1) as server:
            driver = subprocess.Popen(
                [sys.executable, "-m", "platform.label", str(folder), "--base-url", server.url, *PRICES, "--concurrency", "1"],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            while driver.poll() is None:  # spilled objects are deleted once freed: read them now
                spilled.update(str(p) for p in spill.rglob("*") if p.is_file())
                found.update(scan_for_key(spill))
                time.sleep(0.2)
            stdout, stderr = driver.communicate()
            calls = list(server.calls)
        found.update(scan_for_key(ray_tmp))  # the session: logs, spilled objects left, everything
        if ray.is_initialized():  # the shared test Ray's session too, when other tests used it
            found.update(scan_for_key(Path(ray._private.worker._global_node.get_session_dir_path())))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert driver.returncode == 0, stderr[-3000:]
    assert spilled, "nothing was spilled: the object store's contents were not checked"
    assert sorted(found) == []
    # The actors had it: the server accepted every call's Authorization header.
    assert len(calls) == 6 and all(c["status"] == 200 for c in calls)
    assert_key_nowhere(folder, stdout, stderr)


def test_actors_with_another_key_than_the_driver_stop_the_job_with_one_error_line(tmp_path, ray_address):
    folder = write_posts(tmp_path, ["a post", "another post"])
    with FakeOpenAI(key="sk-the-drivers-key") as server:
        result = label(str(folder), "--base-url", server.url, *PRICES, key="sk-the-drivers-key", address=ray_address)
        assert server.call_count == 0
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        "error: the Ray workers have another API key than the driver's in their environment: on a cluster, set "
        "OPENROUTER_API_KEY (or OPENAI_API_KEY) where `ray start` runs on every node, never in a runtime_env "
        "(see platform/label/secret.py)"
    )
    assert "sk-the-drivers-key" not in result.stdout + result.stderr


def test_the_job_holds_a_tokens_per_minute_limit_corrected_from_the_replies_usage(tmp_path, ray_address):
    folder = write_posts(tmp_path, [f"token-counted post {i}" for i in range(16)])
    tpm = 90_000
    used = PROMPT_TOKENS + 150  # what a request counts: the prompt the server reports and max_tokens
    with FakeOpenAI(key=KEY, latency=0.05) as server:
        result = label(
            str(folder), "--base-url", server.url, *PRICES, "--tpm", str(tpm), "--rps", "20", "--concurrency", "2", address=ray_address
        )
        times = [c["t"] for c in server.calls]
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(times) == 16
    # The bucket holds one second's tokens, and the requests in flight were granted on estimates
    # (~320 tokens each) their usage has not corrected yet. Estimates alone would let ~3.5x through.
    burst = tpm / 60 + 2 * used
    for width in (2.0, 5.0, 10.0):
        assert max_in_window(times, width) * used <= tpm / 60 * width + burst, width
    ledger = json.loads((folder / "labeled" / "ledger.json").read_text())
    assert ledger["limits"]["tokens_per_minute"] == tpm
    assert ledger["tokens"] == {"prompt": 16 * PROMPT_TOKENS, "completion": 16 * COMPLETION_TOKENS}
    assert 0 < ledger["achieved_tokens_per_minute"] <= tpm * 1.25
    assert f"tok/min (limit {tpm:,})" in result.stdout


def test_a_tokens_per_minute_limit_no_request_fits_in_is_one_error_line(tmp_path):
    folder = write_posts(tmp_path, ["a post"])
    result = label(str(folder), "--tpm", "0")
    assert result.returncode == 2 and last_line(result.stderr) == "error: --tpm must be positive"
    result = label(str(folder), "--tpm", "300")
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        "error: --tpm 300 is less than one request's tokens (~317 estimated: prompt and max_tokens 150): no request would fit in a minute"
    )
    assert "--tpm TPM" in label("--help").stdout


@pytest.fixture(scope="module")
def faults(tmp_path_factory, ray_address):
    """One run through a server that drops a connection and asks for a day's pause, over posts
    that include decompression bombs."""
    folder = tmp_path_factory.mktemp("faults")
    captions = [f"an ordinary post {i}" for i in range(6)] + ["a post #drop", "a post #wait"]
    png_header_only(folder / "images" / "bomb.png", 100_000, 100_000)  # beyond Pillow's own limit
    png_header_only(folder / "images" / "big.png", 9_000, 9_000)  # beyond the trainable's 64 MP only
    extra = [("bomb", "images/bomb.png", "a bomb"), ("big", "images/big.png", "81 megapixels")]
    write_posts(folder, captions, extra)
    script = {"#drop": ["500", "drop"], "#wait": ["429"]}
    with FakeOpenAI(key=KEY, latency=0.05, script=script, retry_after=86400) as server:
        result = label(
            str(folder),
            "--base-url",
            server.url,
            *PRICES,
            "--rps",
            "20",
            "--concurrency",
            "2",
            "--max-retries",
            "1",
            "--timeout",
            "1",
            "--backoff",
            "0.05",
            address=ray_address,
            timeout=150,
        )
        calls = list(server.calls)
    quarantine = pd.read_csv(folder / "labeled" / "quarantine.csv", dtype={"post_id": str}) if result.returncode == 0 else None
    return {"folder": folder, "captions": captions, "result": result, "calls": calls, "quarantine": quarantine}


def test_a_decompression_bomb_is_quarantined_before_any_request(faults):
    result, quarantine = faults["result"], faults["quarantine"]
    assert result.returncode == 0, result.stderr[-3000:]
    reasons = dict(zip(quarantine["post_id"], quarantine["reason"]))
    assert (
        reasons["bomb"].startswith("decompression_bomb: ")
        and reasons["big"] == "decompression_bomb: 9000x9000 pixels, more than the 64,000,000 an image may have"
    )
    assert dict(zip(quarantine["post_id"], quarantine["attempts"]))["bomb"] == 0
    assert not {c["caption"] for c in faults["calls"]} & {"a bomb", "81 megapixels"}
    labels = pd.read_csv(faults["folder"] / "labeled" / "labels.csv", dtype={"post_id": str})
    assert set(labels["caption"]) == set(faults["captions"]) - {"a post #drop"}


def test_a_connection_lost_on_a_rows_last_attempt_quarantines_that_row_and_the_job_goes_on(faults):
    result, quarantine = faults["result"], faults["quarantine"]
    assert result.returncode == 0, result.stderr[-3000:]
    dropped = quarantine.set_index("post_id").loc["p6"]
    assert dropped["reason"] == "connection_error: RemoteProtocolError: Server disconnected without sending a response."
    assert dropped["attempts"] == 2
    assert [c["behaviour"] for c in faults["calls"] if c["caption"] == "a post #drop"] == ["500", "drop"]
    ledger = json.loads((faults["folder"] / "labeled" / "ledger.json").read_text())
    assert ledger["rows"]["quarantined_by_reason"] == {"connection_error": 1, "decompression_bomb": 2}
    assert ledger["attempt_failures_by_kind"]["connection_error"] == 1


def test_a_day_long_retry_after_pauses_the_job_a_capped_while_and_says_so(faults):
    result = faults["result"]
    assert result.returncode == 0, result.stderr[-3000:]
    waited = [c["t"] for c in faults["calls"] if c["caption"] == "a post #wait"]
    assert len(waited) == 2 and 1.0 <= waited[1] - waited[0] < 10  # --timeout 1 caps the pause at 1 s
    told = [line for line in result.stdout.splitlines() if "Retry-After" in line]
    assert told == [
        "[label] the API asked for pauses of up to 86400s (Retry-After, 1 time(s)); paused 1s instead "
        "(at most --timeout, never over 60s): rows still refused are quarantined as rate_limited and "
        "a re-run retries them"
    ]
    labels = pd.read_csv(faults["folder"] / "labeled" / "labels.csv", dtype={"post_id": str})
    assert "a post #wait" in set(labels["caption"])
    assert json.loads((faults["folder"] / "labeled" / "ledger.json").read_text())["retry_after_capped"] == 1
