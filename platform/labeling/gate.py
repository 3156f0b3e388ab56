"""The one Ray actor every labeling worker asks before each request: the job-wide limits and ledger.

Used by ``python -m platform.label posts.csv --rpm 600 --concurrency 8 --budget-usd 2``.
However many Ray Data actors run, each attempt (first tries and retries alike) first awaits
``acquire``: an ``aiolimiter.AsyncLimiter`` held here grants at most one second's worth of requests
at once and then the configured rate, so any 60 s window holds at most ``rpm + burst`` requests;
a semaphore caps in-flight requests at ``--concurrency``; a 429's Retry-After pauses every worker,
since the server meant the whole key. The actor also keeps the cost ledger (so ``--budget-usd``
holds for the job), counts requests, 429s and retries, and appends each result to the cache.
It is scheduled on the driver's node so the driver reads the same cache folder.
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


def limiter_shape(requests_per_second: float) -> tuple[float, float]:
    """``(max_rate, time_period)`` for AsyncLimiter: a bucket of one second's requests (at least 1)."""
    burst = max(1, math.floor(requests_per_second))
    return float(burst), burst / requests_per_second


@ray.remote(num_cpus=0)
class Gate:
    def __init__(self, requests_per_second: float, concurrency: int, budget_usd: float | None, shard: str):
        self._rps = requests_per_second
        self._limiter = AsyncLimiter(*limiter_shape(requests_per_second))
        self._slots = asyncio.Semaphore(concurrency)
        self._budget = budget_usd
        self._paused_until = 0.0
        self._stop: str | None = None  # "budget" or a fatal error line
        self._fatal: str | None = None
        self._shard = cache.Shard(Path(shard))
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
        return None

    def done(self, outcome: dict[str, Any]) -> None:
        """One attempt finished: free its slot and book its tokens, cost and kind."""
        self._slots.release()
        self._counts[outcome.get("kind", "ok")] += 1
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
