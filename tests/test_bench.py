"""bench/ (issue #9): what its figures rest on, without Ray, so CI notices when bench/ breaks.

    .venv/bin/python -m pytest tests/test_bench.py

The benchmarks themselves take minutes each (``--small``) and are run by hand; here: the
rate-limited loopback server over real HTTP, the achieved-rate and search arithmetic, and that
every benchmark's command line loads.
"""

from __future__ import annotations

import importlib
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pandas as pd
import pytest

from bench.label_throughput import Outcome
from bench.limited_server import RateLimitedOpenAI
from bench.search_efficiency import Sweep
from platform.label.task import load as load_task

KEY = "test-key"
BENCHMARKS = (
    "train_overhead",
    "label_throughput",
    "search_efficiency",
    "inference",
    "startup",
    "data_scale",
    "label_memory",
    "content_hash",
)


def _call(client: openai.OpenAI, caption: str) -> openai.APIStatusError | None:
    try:
        client.chat.completions.create(model="m", messages=load_task("gender_bias").messages(b"\xff\xd8", "image/jpeg", caption))
    except openai.APIStatusError as error:
        return error
    return None


def test_rate_limited_server_holds_its_bucket_and_says_when_to_retry():
    with RateLimitedOpenAI(600, key=KEY) as server:  # a bucket of 11, refilled at 10 a second
        client = openai.OpenAI(api_key=KEY, base_url=server.url, max_retries=0)
        # All at once, so that a slow machine does not give the bucket time to refill between calls.
        with ThreadPoolExecutor(20) as pool:
            errors = list(pool.map(lambda index: _call(client, f"post {index}"), range(20)))
        answered = sum(error is None for error in errors)
        limited = [error for error in errors if error is not None]
        assert 11 <= answered < 20
        assert limited and all(error.status_code == 429 for error in limited)
        waits_ms = [float(error.response.headers["retry-after-ms"]) for error in limited]
        assert all(0 < wait <= 100 for wait in waits_ms)  # one token at 10 a second
        assert all(error.response.headers["Retry-After"] == "1" for error in limited)
        time.sleep(0.15)
        assert _call(client, "after the wait") is None


def test_achieved_rate_counts_the_burst_and_the_rate_between_first_and_last_answer():
    # 11 at once (the burst), then 10 a second for 2 s: all the limit allows.
    times = [0.0] * 11 + [0.1 * step for step in range(1, 21)]
    full = Outcome("x", [{"t": t, "status": 200} for t in times], labeled=31, rows=31, wall_s=2.0)
    assert full.rate_share(burst=11) == pytest.approx(1.0)
    half = Outcome("x", [{"t": t, "status": 200} for t in times[::2]] + [{"t": 1.0, "status": 429}], 16, 31, 2.0)
    assert half.rate_share(burst=11) == pytest.approx(16 / 31)
    assert half.count(429) == 1


def test_search_compute_to_reach_a_quality_sums_trials_in_order():
    results = pd.DataFrame({"val/acc": [0.5, 0.9, 0.8, 0.95], "train_s": [10.0, 20.0, 5.0, 30.0], "epoch": [2, 4, 1, 4]})
    sweep = Sweep("random-none", results, wall_s=100.0)
    assert (sweep.best, sweep.train_s, sweep.epochs) == (0.95, 65.0, 11)
    assert sweep.train_s_to_reach(0.9) == 30.0
    assert sweep.train_s_to_reach(0.95) == 65.0
    assert math.isnan(sweep.train_s_to_reach(0.99))


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_command_loads(name, monkeypatch, capsys):
    benchmark = importlib.import_module(f"bench.{name}")
    monkeypatch.setattr(sys, "argv", [f"bench.{name}", "--help"])
    with pytest.raises(SystemExit) as exited:
        benchmark.main()
    assert exited.value.code == 0
    assert "--full" in capsys.readouterr().out
