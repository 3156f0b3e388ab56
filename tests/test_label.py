"""``python -m platform.label`` against a real OpenAI-compatible server on loopback (tests/openai_server.py).

.venv/bin/python -m pytest tests/test_label.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import last_line, run_command, shared_dataset
from labeling import COST_PER_REQUEST, KEY, PRICES, assert_key_nowhere, label, max_in_window, start_label, write_posts
from openai_replies import PROMPT_TOKENS, expected_score
from openai_server import FakeOpenAI

RPM = 600
# One second's worth of requests may go at once (platform/label/gate.py), plus one for timer slack.
BURST = RPM // 60 + 1
SCRIPT = {
    "#flaky": ["429", "500"],
    "#garbled": ["malformed", "out_of_range"],
    "#bad": ["not_json", "out_of_range", "not_json"],
    "#slow": ["slow", "slow", "slow"],
}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, ray_address):
    folder = tmp_path_factory.mktemp("posts")
    captions = [f"a post about day {i} at the lake" for i in range(20)]
    captions[1] += " #flaky"
    captions[2] += " #garbled"
    captions[3] += " #bad"
    captions[4] += " #slow"
    (folder / "images").mkdir()
    (folder / "images" / "broken.jpg").write_text("not a picture")
    extra = [
        ("gone", "images/nowhere.jpg", "an image that is not there"),
        ("blank", "images/p0.jpg", "   "),
        ("broken", "images/broken.jpg", "a file that is no image"),
        ("twin", "images/p5.jpg", captions[5]),
    ]  # same content as p5: asked once
    write_posts(folder, captions, extra)
    with FakeOpenAI(key=KEY, latency=0.05, script=SCRIPT, slow_s=3.0) as server:
        args = [
            str(folder),
            "--base-url",
            server.url,
            *PRICES,
            "--rpm",
            str(RPM),
            "--concurrency",
            "4",
            "--actors",
            "2",
            "--max-retries",
            "2",
            "--timeout",
            "1",
            "--backoff",
            "0.05",
        ]
        first = label(*args, address=ray_address)
        first_calls = list(server.calls)
        shutil.copytree(folder / "labeled", folder / "first")  # the re-run rewrites labeled/
        rerun = label(*args, address=ray_address)
        rerun_calls = server.calls[len(first_calls) :]
        shutil.copytree(folder / "labeled", folder / "second")
        # The same folder and cache against another API (another port: another --base-url).
        with FakeOpenAI(key=KEY) as other:
            elsewhere = label(*args[:2], other.url, *args[3:], address=ray_address)
            other_calls = list(other.calls)
        yield {
            "folder": folder,
            "out": folder / "first",
            "captions": captions,
            "first": first,
            "first_calls": first_calls,
            "rerun": rerun,
            "rerun_calls": rerun_calls,
            "elsewhere": elsewhere,
            "other_calls": other_calls,
        }


def test_every_row_is_labeled_or_quarantined_once_with_its_reason(synthetic):
    first, out = synthetic["first"], synthetic["out"]
    assert first.returncode == 0, first.stderr[-3000:]
    labels = pd.read_csv(synthetic["out"] / "labels.csv", dtype={"post_id": str})
    quarantine = pd.read_csv(out / "quarantine.csv", dtype={"post_id": str})
    posts = pd.read_csv(synthetic["folder"] / "posts.csv", dtype={"post_id": str})
    assert sorted(labels["post_id"].tolist() + quarantine["post_id"].tolist()) == sorted(posts["post_id"])
    reasons = dict(zip(quarantine["post_id"], quarantine["reason"]))
    assert {k: v.split(":")[0] for k, v in reasons.items()} == {
        "p3": "invalid_reply",
        "p4": "timeout",
        "gone": "missing_image",
        "blank": "empty_caption",
        "broken": "unreadable_image",
    }
    attempts = dict(zip(quarantine["post_id"], quarantine["attempts"]))
    assert attempts == {"p3": 3, "p4": 3, "gone": 0, "blank": 0, "broken": 0}
    assert list(labels.columns) == [
        "post_id",
        "image_path",
        "caption",
        "score",
        "reason",
        "model",
        "prompt_version",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "latency_s",
        "cached",
    ]
    for row in labels.itertuples():
        assert row.score == expected_score(row.caption) and Path(row.image_path).is_absolute() and not row.cached
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["rows"]["labeled"] == len(labels) == 19 and ledger["rows"]["quarantined"] == 5
    assert ledger["rows"]["quarantined_by_reason"] == {
        "empty_caption": 1,
        "invalid_reply": 1,
        "missing_image": 1,
        "timeout": 1,
        "unreadable_image": 1,
    }
    assert ledger["requests"] == len(synthetic["first_calls"]) and ledger["http_429"] == 1
    assert ledger["tokens"]["prompt"] == PROMPT_TOKENS * sum(
        c["status"] == 200 and c["behaviour"] not in ("slow", "malformed") for c in synthetic["first_calls"]
    )
    assert "complete: 19/24 rows labeled" in first.stdout and "[label] " in first.stdout
    assert "quarantined (empty_caption 1, invalid_reply 1, missing_image 1, timeout 1, unreadable_image 1)" in first.stdout


def test_retries_honour_retry_after_and_every_request_carries_the_image(synthetic):
    calls = synthetic["first_calls"]
    flaky = [c["t"] for c in calls if c["caption"].endswith("#flaky")]
    assert len(flaky) == 3 and flaky[1] - flaky[0] >= 1.0  # 429 with Retry-After: 1, then 500, then ok
    assert all(c["has_image"] for c in calls)
    twins = [c for c in calls if c["caption"] == synthetic["captions"][5]]
    assert len(twins) == 1  # two rows with the same image and caption cost one request


def test_the_job_holds_the_rate_limit_in_every_window(synthetic):
    times = [c["t"] for c in synthetic["first_calls"]]
    assert len(times) > 2 * BURST  # enough requests that an unlimited job would break the 1 s bound
    for width in (1.0, 2.0, 60.0):
        assert max_in_window(times, width) <= RPM / 60 * width + BURST, width
    ledger = json.loads((synthetic["out"] / "ledger.json").read_text())
    assert ledger["achieved_requests_per_minute"] <= RPM * 1.5


def test_a_rerun_pays_only_for_rows_that_failed_for_a_transient_reason(synthetic):
    rerun = synthetic["rerun"]
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # The timed-out row is asked again; the invalid reply was paid for, so it stays quarantined.
    assert [c["caption"] for c in synthetic["rerun_calls"]] == [synthetic["captions"][4]]
    labels = pd.read_csv(synthetic["folder"] / "second" / "labels.csv", dtype={"post_id": str})
    assert len(labels) == 20 and labels["cached"].sum() == 19
    assert "(1 new, 19 from cache)" in rerun.stdout


def test_answers_cached_from_one_api_are_not_reused_for_another(synthetic):
    # The cache of labeled/ holds the first server's answers to every row; another --base-url asks again.
    elsewhere = synthetic["elsewhere"]
    assert elsewhere.returncode == 0, elsewhere.stderr[-3000:]
    assert sorted(c["caption"] for c in synthetic["other_calls"]) == sorted(synthetic["captions"])
    labels = pd.read_csv(synthetic["folder"] / "labeled" / "labels.csv", dtype={"post_id": str})
    assert len(labels) == 21 and not labels["cached"].any()  # p0-p19 and the twin of p5
    assert "(21 new, 0 from cache)" in elsewhere.stdout


def test_the_api_in_the_cache_key_is_spelled_one_way_and_a_malformed_one_is_refused(tmp_path):
    from platform.label.inputs import provider

    assert provider("HTTPS://OpenRouter.AI:443/api/v1/") == provider("https://openrouter.ai/api/v1") == "https://openrouter.ai/api/v1"
    assert provider("http://user:pw@127.0.0.1:8765/v1") == "http://127.0.0.1:8765/v1"  # no password in a record
    assert provider("http://127.0.0.1:8765/v1") != provider("http://127.0.0.1:8766/v1")
    folder = write_posts(tmp_path, ["a post"])
    result = label(str(folder), "--base-url", "openrouter.ai/api/v1")
    assert result.returncode == 2
    assert last_line(result.stderr) == "error: --base-url 'openrouter.ai/api/v1' is not an http(s) URL like https://openrouter.ai/api/v1"


def test_the_key_is_never_printed_or_written(synthetic):
    assert_key_nowhere(
        synthetic["folder"],
        synthetic["first"].stdout,
        synthetic["first"].stderr,
        synthetic["rerun"].stdout,
        synthetic["rerun"].stderr,
        synthetic["elsewhere"].stdout,
        synthetic["elsewhere"].stderr,
    )


@pytest.fixture(scope="module")
def labeled_social(tmp_path_factory, ray_address) -> tuple[Path, pd.DataFrame, subprocess.CompletedProcess, int]:
    """The first 20 real social posts labeled through the loopback server."""
    social = shared_dataset("social")
    folder = tmp_path_factory.mktemp("social")
    posts = pd.read_csv(social / "posts.csv", dtype={"post_id": str}).head(20)
    posts["image_path"] = [str(social / p) for p in posts["image_path"]]
    posts.to_csv(folder / "posts.csv", index=False)
    with FakeOpenAI(key=KEY, latency=0.02) as server:
        # The posts name images in ../shared/datasets/social, outside their own folder.
        result = label(
            str(folder / "posts.csv"),
            "--out",
            str(folder / "out"),
            "--base-url",
            server.url,
            *PRICES,
            "--rps",
            "20",
            "--allow-outside-images",
            address=ray_address,
        )
        calls = server.call_count
    return folder, posts, result, calls


def test_real_social_sample_is_labeled(labeled_social):
    folder, posts, result, calls = labeled_social
    assert result.returncode == 0, result.stderr[-3000:]
    assert calls == 20
    labels = pd.read_csv(folder / "out" / "labels.csv", dtype={"post_id": str})
    assert labels["post_id"].tolist() == posts["post_id"].tolist()
    assert [Path(p).resolve() for p in labels["image_path"]] == [Path(p).resolve() for p in posts["image_path"]]
    assert [round(s) for s in labels["score"]] == [expected_score(c) for c in posts["caption"]]
    assert pd.read_csv(folder / "out" / "quarantine.csv").empty


def test_the_labeled_posts_train_gender_bias_and_predict(labeled_social, ray_address, tmp_path):
    folder, posts, _result, _calls = labeled_social
    trained = run_command(
        "run",
        "gender_bias",
        "--tier",
        "smoke",
        "--data",
        str(folder / "out"),
        "--storage",
        str(tmp_path),
        "--name",
        "from-labels",
        address=ray_address,
    )
    assert trained.returncode == 0, trained.stderr[-4000:]
    run_dir = tmp_path / "gender_bias" / "from-labels"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["data"]["rows"]["train"] + manifest["data"]["rows"]["val"] == 20
    assert (run_dir / "predicted_vs_true.png").read_bytes()[:4] == b"\x89PNG"
    trivial = manifest["baseline"]  # the training rows' mean score for every post
    assert trivial["predictor"].startswith("mean score") and trivial["val"]["val/mae"] > 0
    predicted = run_command("predict", str(run_dir), posts["image_path"][0], posts["caption"][0], "--json")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert 0 <= json.loads(predicted.stdout.strip().splitlines()[-1])["score"] <= 10


def test_a_killed_run_resumes_without_paying_twice_and_the_ledger_counts_both_runs(tmp_path, ray_address):
    captions = [f"resumable post {i}" for i in range(30)]
    folder = write_posts(tmp_path / "posts", captions)
    with FakeOpenAI(key=KEY, latency=0.3) as server:
        args = [str(folder), "--base-url", server.url, *PRICES, "--rps", "3", "--concurrency", "2"]
        driver = start_label(*args, address=ray_address)
        deadline = time.monotonic() + 120
        while server.call_count < 8 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert driver.poll() is None, "the run ended before it could be killed"
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        # Ray ends the dead driver's actors soon after; wait until nothing more arrives.
        seen = -1
        while seen != server.call_count:
            seen = server.call_count
            time.sleep(2.0)
        from platform.label import answers

        cached = answers.load(folder / "labeled" / "cache")
        assert 0 < len(cached) < len(captions)
        before = len(server.calls)
        resumed = label(*args, address=ray_address)
        asked = [c["caption"] for c in server.calls[before:]]
        every_call = server.call_count
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    labels = pd.read_csv(folder / "labeled" / "labels.csv")
    assert sorted(labels["caption"]) == sorted(captions)
    cached_captions = set(labels.loc[labels["cached"], "caption"])
    assert len(cached_captions) == len(cached)
    assert not cached_captions & set(asked) and len(asked) == len(set(asked)) == len(captions) - len(cached)
    # The killed run never wrote a ledger; the resumed one counts it from its attempt log.
    ledger = json.loads((folder / "labeled" / "ledger.json").read_text())
    assert ledger["requests"] == len(asked) and ledger["runs"] == 2
    totals = ledger["totals"]
    # Attempts in flight when the killed run's actors died reached the server unlogged: at most --concurrency.
    assert every_call - 2 <= totals["requests"] <= every_call and totals["requests"] > len(asked)
    assert totals["cost_usd"] == pytest.approx(totals["requests"] * COST_PER_REQUEST)
    assert totals["tokens"]["prompt"] == PROMPT_TOKENS * totals["requests"]
    assert len(captions) <= totals["rows_labeled"] <= len(captions) + 2
    assert f"all 2 runs into this folder: requests {totals['requests']}  rows labeled {totals['rows_labeled']}" in resumed.stdout


def test_the_budget_stops_the_run_cleanly(tmp_path, ray_address):
    folder = write_posts(tmp_path, [f"budgeted post {i}" for i in range(12)])
    with FakeOpenAI(key=KEY, latency=0.05) as server:
        result = label(
            str(folder),
            "--base-url",
            server.url,
            *PRICES,
            "--budget-usd",
            str(4 * COST_PER_REQUEST),
            "--concurrency",
            "2",
            "--rps",
            "20",
            address=ray_address,
        )
        calls = server.call_count
    assert result.returncode == 3, result.stderr[-3000:]
    assert "budget reached" in last_line(result.stdout) and "not labeled" in last_line(result.stdout)
    ledger = json.loads((folder / "labeled" / "ledger.json").read_text())
    labeled = len(pd.read_csv(folder / "labeled" / "labels.csv"))
    assert 4 <= labeled == calls <= 4 + 2  # requests already in flight finish
    assert ledger["status"] == "budget_reached" and ledger["rows"]["not_labeled"] == 12 - labeled
    assert pd.read_csv(folder / "labeled" / "quarantine.csv").empty
