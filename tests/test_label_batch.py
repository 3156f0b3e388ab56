"""``python -m platform.label --batch`` against the loopback server's Batch API (tests/openai_server.py).

    .venv/bin/python -m pytest tests/test_label_batch.py

Batch mode starts no Ray, so these tests need no cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import openai
import pandas as pd
import pytest
from helpers import last_line
from labeling import KEY, PRICES, assert_key_nowhere, label, start_label, write_posts
from openai_replies import COMPLETION_TOKENS, PROMPT_TOKENS, expected_score
from openai_server import FakeOpenAI
from PIL import Image

# PRICES is $1 a million tokens each way; the Batch API's half of it.
BATCH_COST_PER_REQUEST = (PROMPT_TOKENS + COMPLETION_TOKENS) / 1e6 * 0.5
POLL = ["--poll", "0.2"]


def read_out(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    out = folder / "labeled"
    return (
        pd.read_csv(out / "labels.csv", dtype={"post_id": str}),
        pd.read_csv(out / "quarantine.csv", dtype={"post_id": str}),
        json.loads((out / "ledger.json").read_text()),
    )


def input_lines(server: FakeOpenAI) -> list[dict]:
    """Every request line of every batch input file the server was sent."""
    return [
        json.loads(line)
        for stored in server.files.values()
        if stored["purpose"] == "batch"
        for line in stored["data"].decode().splitlines()
    ]


def paid(server: FakeOpenAI) -> list[str]:
    """The captions of every batch line the server answered (and so charged for)."""
    return [line["caption"] for line in server.batch_lines if line["status"] == 200]


def test_a_batch_run_labels_every_row_at_the_batch_price_and_a_rerun_sends_nothing(tmp_path):
    captions = [f"a batched post {i}" for i in range(6)]
    folder = write_posts(tmp_path, captions, [("gone", "images/nowhere.jpg", "an image that is not there")])
    with FakeOpenAI(key=KEY) as server:
        first = label(str(folder), "--batch", "--base-url", server.url, *PRICES, *POLL)
        labels, quarantine, ledger = read_out(folder)
        rerun = label(str(folder), "--batch", "--base-url", server.url, *PRICES, *POLL)
        lines, files, batches = input_lines(server), dict(server.files), dict(server.batches)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(labels["caption"]) == sorted(captions) and not labels["cached"].any()
    assert all(row.score == expected_score(row.caption) for row in labels.itertuples())
    assert quarantine["post_id"].tolist() == ["gone"]
    # One upload, one batch, one line a row: the online request's body, its custom_id the cache key.
    assert len(batches) == 1 and sum(f["purpose"] == "batch" for f in files.values()) == 1
    assert sorted(paid(server)) == sorted(captions)
    from platform.label import answers

    cached = answers.load(folder / "labeled" / "cache")
    assert sorted(line["custom_id"] for line in lines) == sorted(cached)
    for line in lines:
        assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
        assert line["body"]["response_format"]["type"] == "json_schema"
        assert line["body"]["messages"][1]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    # The ledger books the batch price: half the online price.
    assert ledger["mode"] == "batch" and ledger["requests"] == 6
    assert "requests_per_minute" not in ledger["limits"] and ledger["achieved_requests_per_minute"] is None
    assert "through the Batch API  elapsed" in first.stdout and "(limit " not in first.stdout
    assert ledger["cost_usd"] == pytest.approx(6 * BATCH_COST_PER_REQUEST)
    assert ledger["prices_usd_per_mtok"] == {"prompt": 0.5, "completion": 0.5}
    assert [b["status"] for b in ledger["batch"]["batches"]] == ["completed"]
    # The re-run finds every row in the cache: no upload, no batch.
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert len(input_lines(server)) == 6 and "(0 new, 6 from cache)" in rerun.stdout
    assert_key_nowhere(folder, first.stdout, first.stderr, rerun.stdout, rerun.stderr)


def kill_once_the_batch_is_saved(args: list[str], state: Path, id_saved: bool) -> None:
    """Starts ``args`` and SIGKILLs it once its batch id is in ``state`` (batches.json); without
    ``id_saved``, then forgets the id, as a driver killed between the batch's creation and its save."""
    driver = start_label(*args)
    deadline = time.monotonic() + 60
    while (
        driver.poll() is None
        and time.monotonic() < deadline
        and not (state.is_file() and any(b.get("id") for b in json.loads(state.read_text())["batches"]))
    ):
        time.sleep(0.02)
    assert driver.poll() is None, "the driver ended before its batch id was saved"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    if not id_saved:
        saved = json.loads(state.read_text())
        saved["batches"][0].update(id=None, status="uploaded")
        state.write_text(json.dumps(saved))


@pytest.mark.parametrize("id_saved", [True, False], ids=["id-saved", "killed-before-the-id-was-saved"])
def test_a_driver_killed_while_polling_resumes_the_same_batch(tmp_path, id_saved):
    captions = [f"a post worth waiting for {i}" for i in range(5)]
    folder = write_posts(tmp_path, captions)
    with FakeOpenAI(key=KEY, batch_polls=15) as server:  # 3 s of polls at --poll 0.2
        args = [str(folder), "--batch", "--base-url", server.url, *PRICES, *POLL]
        kill_once_the_batch_is_saved(args, folder / "labeled" / "batches.json", id_saved)
        # Killed with its batch still running (validating until the first poll, then in progress).
        assert [b["status"] in ("validating", "in_progress") for b in server.batches.values()] == [True]
        assert not (folder / "labeled" / "labels.csv").exists()
        resumed = label(*args)
        batches, uploads = dict(server.batches), [f for f in server.files.values() if f["purpose"] == "batch"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[label] resuming 1 batch(es)" in resumed.stdout
    assert list(batches) == ["batch_1"] and len(uploads) == 1  # no new upload, no new batch
    assert sorted(paid(server)) == sorted(captions)
    labels, _quarantine, ledger = read_out(folder)
    assert sorted(labels["caption"]) == sorted(captions)
    # The killed run paid nothing yet; the resumed one books the batch it collected.
    assert ledger["runs"] == 2 and ledger["requests"] == ledger["totals"]["requests"] == 5
    assert ledger["totals"]["cost_usd"] == pytest.approx(5 * BATCH_COST_PER_REQUEST)


def test_a_batch_whose_id_was_lost_is_found_behind_more_than_a_page_of_newer_batches(tmp_path):
    captions = [f"a post behind many batches {i}" for i in range(3)]
    folder = write_posts(tmp_path, captions)
    with FakeOpenAI(key=KEY, batch_polls=15) as server:
        args = [str(folder), "--batch", "--base-url", server.url, *PRICES, *POLL]
        kill_once_the_batch_is_saved(args, folder / "labeled" / "batches.json", id_saved=False)
        # Meanwhile the account's other jobs create 150 batches: the lost one is on the second page.
        client = openai.OpenAI(api_key=KEY, base_url=server.url)
        other = client.files.create(file=("other.jsonl", b"{}\n"), purpose="batch")
        for _ in range(150):
            client.batches.create(input_file_id=other.id, endpoint="/v1/chat/completions", completion_window="24h")
        resumed = label(*args)
        ours = [b["id"] for b in server.batches.values() if b["input_file_id"] != other.id]
        batches, pages = len(server.batches), list(server.list_pages)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert ours == ["batch_1"] and batches == 151  # adopted, not created again (and paid twice)
    assert pages == [None, "batch_52"]  # newest first, 100 a page: batch_151..batch_52, then batch_51..batch_1
    assert sorted(paid(server)) == sorted(captions)
    labels, _quarantine, _ledger = read_out(folder)
    assert sorted(labels["caption"]) == sorted(captions)


def test_adopting_stops_paging_at_the_first_batch_older_than_the_input_file(tmp_path):
    """An input file whose batch was never created: the pages older than the file are not read."""
    from platform.label.batch import _adopt

    with FakeOpenAI(key=KEY) as server:
        client = openai.OpenAI(api_key=KEY, base_url=server.url)
        old = client.files.create(file=("old.jsonl", b"{}\n"), purpose="batch")
        for _ in range(250):
            client.batches.create(input_file_id=old.id, endpoint="/v1/chat/completions", completion_window="24h")
        for batch in server.batches.values():
            batch["created_at"] -= 3600  # created an hour before the file below was uploaded
        ours = client.files.create(file=("ours.jsonl", b"{}\n"), purpose="batch")
        for _ in range(120):
            client.batches.create(input_file_id=old.id, endpoint="/v1/chat/completions", completion_window="24h")
        found = _adopt(client, {"input_file_id": ours.id, "uploaded_at": ours.created_at})
        pages = list(server.list_pages)
    assert found is None and pages == [None, "batch_271"]  # 370 batches; the second page reaches the older ones


def test_an_expiring_and_a_partly_failing_batch_pay_once_for_each_row(tmp_path):
    captions = [f"an ordinary post {i}" for i in range(4)] + ["a post #late", "a post #flaky", "a post #bad"]
    folder = write_posts(tmp_path, captions)
    script = {"#late": ["expire"], "#flaky": ["500"], "#bad": ["out_of_range"]}
    with FakeOpenAI(key=KEY, script=script) as server:
        args = [str(folder), "--batch", "--base-url", server.url, *PRICES, *POLL]
        first = label(*args)
        labels, quarantine, ledger = read_out(folder)
        first_paid, first_lines = paid(server), len(server.batch_lines)
        second = label(*args)
        second_lines = [line["caption"] for line in server.batch_lines[first_lines:]]
        labels2, quarantine2, ledger2 = read_out(folder)
        statuses = [b["status"] for b in server.batches.values()]
    assert first.returncode == 0, first.stderr[-3000:]
    # Every row once, labeled or quarantined with its specific reason.
    assert sorted(labels["caption"].tolist() + quarantine["caption"].tolist()) == sorted(captions)
    reasons = dict(zip(quarantine["caption"], quarantine["reason"]))
    assert set(reasons) == {"a post #late", "a post #flaky", "a post #bad"}
    assert reasons["a post #late"].startswith("batch_expired: ")
    assert reasons["a post #flaky"] == "http_500: server error in the batch"
    assert reasons["a post #bad"] == "invalid_reply: score 42 out of range 0..10"
    assert ledger["batch"]["not_run_by_reason"] == {"batch_expired": 1}
    assert ledger["attempt_failures_by_kind"] == {"http_500": 1, "invalid_reply": 1}
    # The expired line was never run and the 500 was not charged: 5 lines paid (4 labels, 1 invalid reply).
    assert sorted(first_paid) == sorted(captions[:4] + ["a post #bad"])
    assert ledger["cost_usd"] == pytest.approx(5 * BATCH_COST_PER_REQUEST)
    # The next run sends the two unanswered rows in a new batch; the paid invalid reply stays quarantined.
    assert second.returncode == 0, second.stderr[-3000:]
    assert statuses == ["expired", "completed"] and sorted(second_lines) == ["a post #flaky", "a post #late"]
    assert sorted(paid(server)) == sorted(set(paid(server)))  # no row paid twice over both runs
    assert sorted(labels2["caption"]) == sorted(set(captions) - {"a post #bad"})
    assert quarantine2["caption"].tolist() == ["a post #bad"]
    assert ledger2["totals"]["cost_usd"] == pytest.approx(7 * BATCH_COST_PER_REQUEST)


def row_estimate_usd(caption: str) -> float:
    """The most one row may cost at the batch price of PRICES: its prompt estimate and all of max_tokens."""
    from platform.label import prompt
    from platform.label.task import load

    tokens = load("gender_bias").request_tokens(caption, prompt.IMAGE_TOKENS_LOW_DETAIL)
    return tokens * 0.5 / 1e6


def test_the_budget_is_checked_before_a_batch_is_created(tmp_path):
    captions = [f"budgeted post {i}" for i in range(6)]
    folder = write_posts(tmp_path, captions)
    room_for_two = sum(row_estimate_usd(c) for c in captions[:2]) * 1.01
    with FakeOpenAI(key=KEY) as server:
        two = label(str(folder), "--batch", "--base-url", server.url, *PRICES, *POLL, "--budget-usd", f"{room_for_two}")
        labels, _quarantine, ledger = read_out(folder)
        none = label(
            str(folder), "--batch", "--base-url", server.url, *PRICES, *POLL, "--budget-usd", f"{row_estimate_usd(captions[0]) / 2}"
        )
        batches = len(server.batches)
    assert two.returncode == 3, two.stderr[-3000:]
    assert sorted(paid(server)) == sorted(labels["caption"]) and len(labels) == 2
    assert ledger["status"] == "budget_reached" and ledger["rows"]["not_labeled"] == 4
    assert "budget reached" in last_line(two.stdout) and ": 4 rows not sent (the most they may cost" in two.stdout
    # Not even one row fits: no upload, no batch.
    assert none.returncode == 3, none.stderr[-3000:]
    assert batches == 1 and len(server.files) == 2  # the first run's input and output files only


def test_an_api_that_refuses_response_format_in_a_batch_gets_the_rows_again_without_it(tmp_path):
    captions = [f"a plainly asked post {i}" for i in range(4)]
    folder = write_posts(tmp_path, captions)
    with FakeOpenAI(key=KEY, refuse_format=True) as server:
        result = label(str(folder), "--batch", "--base-url", server.url, *PRICES, *POLL)
        lines = input_lines(server)
    assert result.returncode == 0, result.stderr[-3000:]
    labels, quarantine, _ledger = read_out(folder)
    assert sorted(labels["caption"]) == sorted(captions) and quarantine.empty
    assert [("response_format" in line["body"]) for line in lines] == [True] * 4 + [False] * 4
    assert json.loads((folder / "labeled" / "batches.json").read_text())["structured"] is False


def test_batch_flags_are_checked_before_anything_is_sent(tmp_path):
    folder = write_posts(tmp_path, ["a post"])
    with FakeOpenAI(key=KEY) as server:
        limited = label(str(folder), "--batch", "--rpm", "60", "--base-url", server.url, *PRICES)
        no_poll = label(str(folder), "--batch", "--poll", "0", "--base-url", server.url, *PRICES)
        assert not server.files and not server.batches
    assert limited.returncode == 2 and last_line(limited.stderr) == (
        "error: --rpm, --rps and --tpm limit online requests: a batch runs under the provider's batch limits"
    )
    assert no_poll.returncode == 2 and last_line(no_poll.stderr) == "error: --poll must be positive and --batch-discount in (0, 1]"


def test_an_api_without_a_batch_api_is_one_error_line(tmp_path):
    folder = write_posts(tmp_path, ["a post"])
    with FakeOpenAI(key=KEY) as server:
        url = server.url.removesuffix("/v1") + "/elsewhere/v1"  # no files or batches endpoints there
        result = label(str(folder), "--batch", "--base-url", url, *PRICES, "--max-retries", "0")
    assert result.returncode == 2
    assert last_line(result.stderr).startswith(f"error: HTTP 404 from {url}: this API has no Batch API")


def test_a_rejected_key_is_one_error_line_and_never_written(tmp_path):
    folder = write_posts(tmp_path, ["a post", "another post"])
    with FakeOpenAI(key="the-right-key") as server:
        result = label(str(folder), "--batch", "--base-url", server.url, *PRICES, *POLL)
        assert not server.files and not server.batches
    assert result.returncode == 2
    assert (
        last_line(result.stderr) == f"error: the API at {server.url} rejected the key (HTTP 401): "
        "check OPENROUTER_API_KEY or OPENAI_API_KEY"
    )
    assert_key_nowhere(folder, result.stdout, result.stderr)


def scanned_rows(folder: Path, count: int) -> list[dict]:
    """Rows as the driver's scan leaves them (platform/label/inputs.py) for write_posts's images."""
    rows = []
    for i in range(count):
        image = folder / "images" / f"p{i}.jpg"
        digest = hashlib.sha256(image.read_bytes()).hexdigest()
        rows.append(
            {
                "key": f"k{i}",
                "id": f"p{i}",
                "text": f"split post {i}",
                "mime": "image/jpeg",
                "usd": 0.25,
                "image_path": str(image),
                "digest": digest,
            }
        )
    return rows


def input_files(rows: list[dict], out: Path, results: dict) -> list[list[dict]]:
    """The batch input files ``rows`` make, each read as it is yielded (the next one is written in its place)."""
    from platform.label import batch
    from platform.label.task import load

    return [
        [json.loads(line) for line in chunk["path"].read_text().splitlines()]
        for chunk in batch._chunks(load("gender_bias"), rows, out, "m", False, results)
    ]


def test_rows_past_a_batchs_line_or_byte_limit_go_to_another_input_file(tmp_path, monkeypatch):
    from platform.label import batch, batch_files
    from platform.label.task import load

    write_posts(tmp_path, [f"split post {i}" for i in range(5)])
    rows = scanned_rows(tmp_path, 5)
    monkeypatch.setattr(batch, "MAX_LINES", 2)
    assert [[line["custom_id"] for line in f] for f in input_files(rows, tmp_path / "out", {})] == [["k0", "k1"], ["k2", "k3"], ["k4"]]
    one_line = len(batch_files.request_line(load("gender_bias"), rows[0], (tmp_path / "images" / "p0.jpg").read_bytes(), "m", False))
    monkeypatch.setattr(batch, "MAX_LINES", 50_000)
    monkeypatch.setattr(batch, "MAX_BYTES", int(3.5 * one_line))  # lines differ by a few bytes
    files = input_files(rows, tmp_path / "out", {})
    assert [len(f) for f in files] == [3, 2]
    assert all("response_format" not in line["body"] and line["body"]["model"] == "m" for f in files for line in f)


def test_a_batch_row_whose_image_changed_after_the_scan_is_quarantined_not_sent(tmp_path):
    write_posts(tmp_path, [f"split post {i}" for i in range(3)])
    rows = scanned_rows(tmp_path, 3)
    Image.new("RGB", (8, 8), (250, 20, 20)).save(tmp_path / "images" / "p1.jpg")  # rewritten after the scan
    results: dict = {}
    files = input_files(rows, tmp_path / "out", results)
    assert [[line["custom_id"] for line in f] for f in files] == [["k0", "k2"]]
    assert list(results) == ["k1"] and results["k1"]["status"] == "quarantined"
    assert (
        results["k1"]["reason"]
        == f"changed_image: {tmp_path / 'images' / 'p1.jpg'} changed after the scan (run again to label what it holds now)"
    )
