"""The one Ray actor every labeling worker asks before each request: the job-wide limits and ledger.

Used by ``python -m platform.label posts.csv --rpm 600 --concurrency 8 --budget-usd 2``.
However many Ray Data actors run, each attempt (first tries and retries alike) first awaits
``acquire``: an ``aiolimiter.AsyncLimiter`` held here grants at most one second's worth of requests
at once and then the configured rate, so any 60 s window holds at most ``rpm + burst`` requests;
a semaphore caps in-flight requests at ``--concurrency``; a 429's Retry-After pauses every worker,
since the server meant the whole key. The actor also keeps the cost ledger (so ``--budget-usd``
holds for the job), counts requests, 429s and retries, appends each result to the cache and each
finished attempt to the run's log (``<out>/runs/``: what ledger.json's totals add up, killed runs
included), and knows whether the server has answered anything yet (``reachable``).
It is scheduled on the driver's node so the driver reads the same cache and output folders.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import ray
from aiolimiter import AsyncLimiter

from platform.labeling import cache

# Attempt kinds that mean the server sent something back: it is reachable, whatever it said.
NO_ANSWER = ("connection_error", "timeout")
REACHABLE_POLL_S = 0.05


def limiter_shape(requests_per_second: float) -> tuple[float, float]:
    """``(max_rate, time_period)`` for AsyncLimiter: a bucket of one second's requests (at least 1)."""
    burst = max(1, math.floor(requests_per_second))
    return float(burst), burst / requests_per_second


@ray.remote(num_cpus=0)
class Gate:
    def __init__(self, requests_per_second: float, concurrency: int, budget_usd: float | None, shard: str,
                 attempts: str):
        self._rps = requests_per_second
        self._limiter = AsyncLimiter(*limiter_shape(requests_per_second))
        self._slots = asyncio.Semaphore(concurrency)
        self._budget = budget_usd
        self._paused_until = 0.0
        self._stop: str | None = None  # "budget" or a fatal error line
        self._fatal: str | None = None
        self._shard = cache.Shard(Path(shard))
        self._attempts = cache.Shard(Path(attempts))
        self._in_flight = 0
        self._answered = 0
        self._longest_retry_after = 0.0
        self._counts: Counter = Counter()
        self._cost = 0.0
        self._grants: list[float] = []

    async def acquire(self) -> str | None:
        """Wait for a slot and a rate permit; ``None`` means go, a string says why to stop instead."""
        if self._stop:
            return self._stop
        await self._slots.acquire()
        try:
            while True:
                wait = self._paused_until - time.monotonic()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            await self._limiter.acquire()
            if self._stop:  # decided while this caller queued
                self._slots.release()
                return self._stop
        except BaseException:
            self._slots.release()
            raise
        self._grants.append(time.time())
        self._counts["requests"] += 1
        self._in_flight += 1
        return None

    def done(self, outcome: dict[str, Any]) -> None:
        """One attempt finished: free its slot, book its tokens, cost and kind, and log it durably."""
        self._slots.release()
        self._in_flight -= 1
        kind = outcome.get("kind", "ok")
        self._attempts.write({"t": round(time.time(), 3), "kind": kind, "retry": bool(outcome.get("retry")),
                              **{k: outcome.get(k) or 0 for k in ("prompt_tokens", "completion_tokens", "cost_usd")}})
        self._answered += kind not in NO_ANSWER
        if outcome.get("retry_after_asked_s"):
            self._counts["retry_after_capped"] += 1
            self._longest_retry_after = max(self._longest_retry_after, float(outcome["retry_after_asked_s"]))
        self._counts[kind] += 1
        if outcome.get("retry"):
            self._counts["retries"] += 1
        self._counts["prompt_tokens"] += int(outcome.get("prompt_tokens") or 0)
        self._counts["completion_tokens"] += int(outcome.get("completion_tokens") or 0)
        self._cost += float(outcome.get("cost_usd") or 0.0)
        pause = float(outcome.get("pause_s") or 0.0)
        if pause > 0:
            self._paused_until = max(self._paused_until, time.monotonic() + pause)
        if self._budget is not None and self._cost >= self._budget and not self._stop:
            self._stop = "budget"

    def record(self, result: dict[str, Any]) -> None:
        """A row's final result: durable in the cache before the worker moves on."""
        if cache.cacheable(result):
            self._shard.write(result)

    async def reachable(self, timeout_s: float) -> bool:
        """Whether the server has answered any attempt of this job; asked by a row whose last attempt
        failed to connect. Waits for the attempts still in flight first (a row that fails fast must
        not end the job while others are about to get answers), but no longer than one reply may
        take (``--timeout``): an attempt of an actor that died is never ``done``."""
        deadline = time.monotonic() + timeout_s + 1.0
        while not self._answered and self._in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(REACHABLE_POLL_S)
        return self._answered > 0

    def abort(self, reason: str) -> None:
        """A job-wide failure (key rejected, server unreachable): every worker stops asking."""
        if self._fatal is None:
            self._fatal = reason
        self._stop = "fatal"

    def stats(self) -> dict[str, Any]:
        counts = dict(self._counts)
        grants = self._grants
        span = grants[-1] - grants[0] if len(grants) > 1 else 0.0
        return {
            **counts,
            "cost_usd": self._cost,
            "longest_retry_after_s": self._longest_retry_after,
            "stopped": self._stop,
            "fatal": self._fatal,
            "first_request": grants[0] if grants else None,
            "last_request": grants[-1] if grants else None,
            # Requests over the span they were granted in: what the limiter actually let through
            # (none under a second: a first burst is no rate).
            "achieved_rpm": (len(grants) - 1) / span * 60 if span >= 1.0 else None,
        }

    def close(self) -> None:
        self._shard.close()
        self._attempts.close()
