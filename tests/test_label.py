"""``python -m platform.label`` against a real OpenAI-compatible server on loopback (tests/openai_server.py).

    .venv/bin/python -m pytest tests/test_label.py
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, TEST_ENV, last_line, png_header_only, run_command, shared_dataset
from openai_server import PROMPT_TOKENS, FakeOpenAI, expected_score
from PIL import Image

KEY = "sk-test-9f8e7d6c5b4a"
# The Labeler actors read the key from their own environment, never through Ray: the shared test
# Ray (tests/conftest.py, started after every test module is imported) gets it the way a cluster's
# workers must, in the environment its raylet starts in.
os.environ["OPENROUTER_API_KEY"] = KEY
PRICES = ["--price-in", "1", "--price-out", "1"]  # 1000 + 20 tokens a request: $0.00102
COST_PER_REQUEST = (PROMPT_TOKENS + 20) / 1e6
RPM = 600
# One second's worth of requests may go at once (platform/label/gate.py), plus one for timer slack.
BURST = RPM // 60 + 1
SCRIPT = {
    "#flaky": ["429", "500"],
    "#garbled": ["malformed", "out_of_range"],
    "#bad": ["not_json", "out_of_range", "not_json"],
    "#slow": ["slow", "slow", "slow"],
}


def label(*args: str, key: str | None = KEY, address: str | None = None, timeout: float = 300):
    """``python -m platform.label args...`` with exactly this key in the environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENROUTER_API_KEY", "OPENAI_API_KEY")}
    env.update(TEST_ENV)
    if key is not None:
        env["OPENROUTER_API_KEY"] = key
    if address:
        env["RAY_ADDRESS"] = address
    return subprocess.run([sys.executable, "-m", "platform.label", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def write_posts(folder: Path, captions: list[str], extra: list[tuple[str, str, str]] = ()) -> Path:
    """posts.csv in the seed's format with one tiny distinct JPEG a caption, plus ``extra`` raw rows."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, caption in enumerate(captions):
        Image.new("RGB", (8, 8), (i * 7 % 256, i * 13 % 256, 90)).save(folder / "images" / f"p{i}.jpg")
        rows.append((f"p{i}", f"images/p{i}.jpg", caption))
    rows += list(extra)
    pd.DataFrame(rows, columns=["post_id", "image_path", "caption"]).assign(upvotes=1).to_csv(folder / "posts.csv", index=False)
    return folder


def max_in_window(times: list[float], width: float) -> int:
    times = sorted(times)
    return max((bisect.bisect_left(times, t + width) - i for i, t in enumerate(times)), default=0)


def assert_key_nowhere(out: Path, *texts: str) -> None:
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(errors="replace"), path
    for text in texts:
        assert KEY not in text


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
    extra = [("gone", "images/nowhere.jpg", "an image that is not there"), ("blank", "images/p0.jpg", "   "),
             ("broken", "images/broken.jpg", "a file that is no image"),
             ("twin", "images/p5.jpg", captions[5])]  # same content as p5: asked once
    write_posts(folder, captions, extra)
    with FakeOpenAI(key=KEY, latency=0.05, script=SCRIPT, slow_s=3.0) as server:
        args = [str(folder), "--base-url", server.url, *PRICES, "--rpm", str(RPM), "--concurrency", "4",
                "--actors", "2", "--max-retries", "2", "--timeout", "1", "--backoff", "0.05"]
        first = label(*args, address=ray_address)
        first_calls = list(server.calls)
        shutil.copytree(folder / "labeled", folder / "first")  # the re-run rewrites labeled/
        rerun = label(*args, address=ray_address)
        rerun_calls = server.calls[len(first_calls):]
        shutil.copytree(folder / "labeled", folder / "second")
        # The same folder and cache against another API (another port: another --base-url).
        with FakeOpenAI(key=KEY) as other:
            elsewhere = label(*args[:2], other.url, *args[3:], address=ray_address)
            other_calls = list(other.calls)
        yield {"folder": folder, "out": folder / "first", "captions": captions, "first": first,
               "first_calls": first_calls, "rerun": rerun, "rerun_calls": rerun_calls,
               "elsewhere": elsewhere, "other_calls": other_calls}


def test_every_row_is_labeled_or_quarantined_once_with_its_reason(synthetic):
    first, out = synthetic["first"], synthetic["out"]
    assert first.returncode == 0, first.stderr[-3000:]
    labels = pd.read_csv(synthetic["out"] / "labels.csv", dtype={"post_id": str})
    quarantine = pd.read_csv(out / "quarantine.csv", dtype={"post_id": str})
    posts = pd.read_csv(synthetic["folder"] / "posts.csv", dtype={"post_id": str})
    assert sorted(labels["post_id"].tolist() + quarantine["post_id"].tolist()) == sorted(posts["post_id"])
    reasons = dict(zip(quarantine["post_id"], quarantine["reason"]))
    assert {k: v.split(":")[0] for k, v in reasons.items()} == {
        "p3": "invalid_reply", "p4": "timeout", "gone": "missing_image", "blank": "empty_caption",
        "broken": "unreadable_image"}
    attempts = dict(zip(quarantine["post_id"], quarantine["attempts"]))
    assert attempts == {"p3": 3, "p4": 3, "gone": 0, "blank": 0, "broken": 0}
    assert list(labels.columns) == ["post_id", "image_path", "caption", "score", "reason", "model", "prompt_version",
                                    "prompt_tokens", "completion_tokens", "cost_usd", "latency_s", "cached"]
    for row in labels.itertuples():
        assert row.score == expected_score(row.caption) and Path(row.image_path).is_absolute() and not row.cached
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["rows"]["labeled"] == len(labels) == 19 and ledger["rows"]["quarantined"] == 5
    assert ledger["rows"]["quarantined_by_reason"] == {"empty_caption": 1, "invalid_reply": 1, "missing_image": 1,
                                                       "timeout": 1, "unreadable_image": 1}
    assert ledger["requests"] == len(synthetic["first_calls"]) and ledger["http_429"] == 1
    assert ledger["tokens"]["prompt"] == PROMPT_TOKENS * sum(c["status"] == 200 and c["behaviour"] not in ("slow", "malformed")
                                                             for c in synthetic["first_calls"])
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

    assert provider("HTTPS://OpenRouter.AI:443/api/v1/") == provider("https://openrouter.ai/api/v1") \
        == "https://openrouter.ai/api/v1"
    assert provider("http://user:pw@127.0.0.1:8765/v1") == "http://127.0.0.1:8765/v1"  # no password in a record
    assert provider("http://127.0.0.1:8765/v1") != provider("http://127.0.0.1:8766/v1")
    folder = write_posts(tmp_path, ["a post"])
    result = label(str(folder), "--base-url", "openrouter.ai/api/v1")
    assert result.returncode == 2
    assert last_line(result.stderr) == "error: --base-url 'openrouter.ai/api/v1' is not an http(s) URL like " \
                                       "https://openrouter.ai/api/v1"


def test_the_key_is_never_printed_or_written(synthetic):
    assert_key_nowhere(synthetic["folder"], synthetic["first"].stdout, synthetic["first"].stderr,
                       synthetic["rerun"].stdout, synthetic["rerun"].stderr,
                       synthetic["elsewhere"].stdout, synthetic["elsewhere"].stderr)


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
        result = label(str(folder), "--base-url", server.url, *PRICES, "--rps", "20", "--concurrency", "2",
                       "--max-retries", "1", "--timeout", "1", "--backoff", "0.05", address=ray_address, timeout=150)
        calls = list(server.calls)
    quarantine = pd.read_csv(folder / "labeled" / "quarantine.csv", dtype={"post_id": str}) \
        if result.returncode == 0 else None
    return {"folder": folder, "captions": captions, "result": result, "calls": calls, "quarantine": quarantine}


def test_a_decompression_bomb_is_quarantined_before_any_request(faults):
    result, quarantine = faults["result"], faults["quarantine"]
    assert result.returncode == 0, result.stderr[-3000:]
    reasons = dict(zip(quarantine["post_id"], quarantine["reason"]))
    assert reasons["bomb"].startswith("decompression_bomb: ") and reasons["big"] == \
        "decompression_bomb: 9000x9000 pixels, more than the 64,000,000 an image may have"
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
    assert told == ["[label] the API asked for pauses of up to 86400s (Retry-After, 1 time(s)); paused 1s instead "
                    "(at most --timeout, never over 60s): rows still refused are quarantined as rate_limited and "
                    "a re-run retries them"]
    labels = pd.read_csv(faults["folder"] / "labeled" / "labels.csv", dtype={"post_id": str})
    assert "a post #wait" in set(labels["caption"])
    assert json.loads((faults["folder"] / "labeled" / "ledger.json").read_text())["retry_after_capped"] == 1


def test_an_image_path_outside_the_source_folder_is_refused_unless_allowed(tmp_path):
    folder = tmp_path / "posts"
    elsewhere = write_posts(tmp_path / "elsewhere", ["private one", "private two"])
    extra = [("inside", str(folder / "images" / "p1.jpg"), "an absolute path inside the folder"),
             ("out", "../elsewhere/images/p0.jpg", "private one"),
             ("out2", str(elsewhere / "images" / "p1.jpg"), "private two")]
    write_posts(folder, ["a post", "another post"], extra)
    with FakeOpenAI(key=KEY) as server:
        refused = label(str(folder), "--base-url", server.url, *PRICES)
        assert server.call_count == 0
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert last_line(refused.stderr) == (
        f"error: {folder / 'posts.csv'}: post_id out: image_path '../elsewhere/images/p0.jpg' is outside {folder} "
        "(and 1 more rows); pass --allow-outside-images to send images from elsewhere to the API")
    assert not (folder / "labeled").exists()
    allowed = label(str(folder), "--base-url", server.url, *PRICES, "--allow-outside-images", "--dry-run", key=None)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "would send 5 requests" in allowed.stdout and "0 quarantined before any request" in allowed.stdout


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
        result = label(str(folder / "posts.csv"), "--out", str(folder / "out"), "--base-url", server.url,
                       *PRICES, "--rps", "20", "--allow-outside-images", address=ray_address)
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
    trained = run_command("run", "gender_bias", "--tier", "smoke", "--data", str(folder / "out"),
                          "--storage", str(tmp_path), "--name", "from-labels", address=ray_address)
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
    env = {**os.environ, **TEST_ENV, "RAY_ADDRESS": ray_address, "OPENROUTER_API_KEY": KEY}
    with FakeOpenAI(key=KEY, latency=0.3) as server:
        args = [str(folder), "--base-url", server.url, *PRICES, "--rps", "3", "--concurrency", "2"]
        driver = subprocess.Popen([sys.executable, "-m", "platform.label", *args], cwd=REPO, env=env,
                                  start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    assert f"all 2 runs into this folder: requests {totals['requests']}  rows labeled {totals['rows_labeled']}" \
        in resumed.stdout


def test_the_budget_stops_the_run_cleanly(tmp_path, ray_address):
    folder = write_posts(tmp_path, [f"budgeted post {i}" for i in range(12)])
    with FakeOpenAI(key=KEY, latency=0.05) as server:
        result = label(str(folder), "--base-url", server.url, *PRICES, "--budget-usd", str(4 * COST_PER_REQUEST),
                       "--concurrency", "2", "--rps", "20", address=ray_address)
        calls = server.call_count
    assert result.returncode == 3, result.stderr[-3000:]
    assert "budget reached" in last_line(result.stdout) and "not labeled" in last_line(result.stdout)
    ledger = json.loads((folder / "labeled" / "ledger.json").read_text())
    labeled = len(pd.read_csv(folder / "labeled" / "labels.csv"))
    assert 4 <= labeled == calls <= 4 + 2  # requests already in flight finish
    assert ledger["status"] == "budget_reached" and ledger["rows"]["not_labeled"] == 12 - labeled
    assert pd.read_csv(folder / "labeled" / "quarantine.csv").empty


def test_dry_run_estimates_without_a_key_or_a_call(tmp_path):
    folder = write_posts(tmp_path, [f"estimated post {i}" for i in range(5)], [("gone", "images/x.jpg", "no image")])
    with FakeOpenAI(key=KEY) as server:
        result = label(str(folder), "--base-url", server.url, "--dry-run", "--progress", "on", key=None)
        assert server.call_count == 0
    assert result.returncode == 0, result.stderr
    assert "would send 5 requests" in result.stdout and "cost (estimate): ~$" in result.stdout
    assert "missing_image 1" in result.stdout and not (folder / "labeled").exists()
    assert "[label] scanning images: 100%" in result.stdout + result.stderr  # --progress on: the scan's bar


def test_a_missing_key_is_one_error_line(tmp_path):
    folder = write_posts(tmp_path, ["a post"])
    result = label(str(folder), key=None)
    assert result.returncode == 2 and last_line(result.stderr).startswith("error: no API key: set OPENROUTER_API_KEY")


def test_a_rejected_key_aborts_with_one_error_line(tmp_path, ray_address):
    folder = write_posts(tmp_path, [f"post {i}" for i in range(8)])
    with FakeOpenAI(key="the-right-key") as server:
        result = label(str(folder), "--base-url", server.url, *PRICES, "--concurrency", "2", address=ray_address)
        assert 1 <= server.call_count <= 2 + 2  # in flight when the first 401 came
    assert result.returncode == 2
    assert last_line(result.stderr) == f"error: the API at {server.url} rejected the key (HTTP 401): " \
                                       "check OPENROUTER_API_KEY or OPENAI_API_KEY"
    assert not (folder / "labeled" / "labels.csv").exists()
    assert_key_nowhere(folder, result.stdout, result.stderr)


def test_an_unreachable_server_aborts_with_one_error_line(tmp_path, ray_address):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    folder = write_posts(tmp_path, ["a post", "another post"])
    result = label(str(folder), "--base-url", url, *PRICES, "--max-retries", "1", "--backoff", "0.01",
                   address=ray_address)
    assert result.returncode == 2
    assert last_line(result.stderr).startswith(f"error: cannot reach the API at {url} (")
    assert not (folder / "labeled" / "labels.csv").exists()


def test_replies_are_parsed_leniently_and_validated_strictly():
    from platform.label.labeler import RETRY_AFTER_CAP_S, retry_after, retry_after_cap
    from platform.label.reply import ReplyError
    from platform.label.task import load

    parse_reply = load("gender_bias").parse
    assert parse_reply('```json\n{"score": 7, "reason": "ok"}\n```') == (7.0, "ok")
    assert parse_reply('Sure! {"score": "3.5", "reason": " two\nlines "} Hope it helps.') == (3.5, "two lines")
    for bad in ("", "five", "[1, 2]", '{"score": 11, "reason": "x"}', '{"score": true, "reason": "x"}',
                '{"score": 4}', '{"reason": "x"}'):
        with pytest.raises(ReplyError):
            parse_reply(bad)
    assert retry_after({"retry-after": "2"}) == 2.0 and retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({}) == 0.0 and retry_after({"retry-after": "soon"}) == 0.0
    assert retry_after({"retry-after": "86400"}) == 86400  # the server's word; the pause is capped apart
    assert retry_after_cap(1) == 1 and retry_after_cap(3600) == RETRY_AFTER_CAP_S == 60
