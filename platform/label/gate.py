"""The one Ray actor every labeling worker asks before each request: the job-wide limits and ledger.

Used by ``python -m platform.label posts.csv --rpm 600 --tpm 200000 --concurrency 8 --budget-usd 2``.
However many Ray Data actors run, each attempt (first tries and retries alike) first awaits
``acquire``: a row this job has already answered is not sent again (its answer is returned: an
actor that Ray restarted re-runs its whole batch); a concurrency slot is leased to the asking
process, so a dead one's come back (platform/label/leases.py); the tokens-per-minute bucket
(platform/label/tokens.py) takes the request's estimate; an ``aiolimiter.AsyncLimiter`` grants
at most one second's worth of requests at once and then the configured rate, so any 60 s window
holds at most ``rpm + burst`` requests; a 429's Retry-After pauses every worker, since the server
meant the whole key. ``done`` ends the attempt: it settles the tokens from the reply's usage, keeps
the cost ledger (so ``--budget-usd`` holds for the job), counts requests, 429s and retries, appends
the row's answer to the cache and each attempt to the run's log (``<out>/runs/``: what
ledger.json's totals add up, killed runs included), and knows whether the server has answered
anything yet (``reachable``). It is scheduled on the driver's node so the driver reads the same
cache and output folders.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from aiolimiter import AsyncLimiter

from platform.label import answers
from platform.label.leases import HEARTBEAT_S, Leases
from platform.label.tokens import TokenBucket

# Attempt kinds that mean the server sent something back: it is reachable, whatever it said.
NO_ANSWER = ("connection_error", "timeout")
# What ``acquire`` tells a holder taken for dead: the caller is gone, or it stalled and asks again.
REVOKED = "revoked"
REACHABLE_POLL_S = 0.05


@dataclass
class Limits:
    requests_per_second: float
    concurrency: int
    budget_usd: float | None = None
    tokens_per_minute: float | None = None


def limiter_shape(requests_per_second: float) -> tuple[float, float]:
    """``(max_rate, time_period)`` for AsyncLimiter: a bucket of one second's requests (at least 1)."""
    burst = max(1, math.floor(requests_per_second))
    return float(burst), burst / requests_per_second


@ray.remote(num_cpus=0)
class Gate:
    def __init__(self, limits: Limits, shard: str, attempts: str):
        self._limiter = AsyncLimiter(*limiter_shape(limits.requests_per_second))
        self._leases = Leases(limits.concurrency)
        self._tokens = TokenBucket(limits.tokens_per_minute) if limits.tokens_per_minute else None
        self._budget = limits.budget_usd
        self._paused_until = 0.0
        self._stop: str | None = None  # "budget" or "fatal"
        self._fatal: str | None = None
        self._shard = answers.Shard(Path(shard))
        self._attempts = answers.Shard(Path(attempts))
        self._answers: dict[str, int] = {}  # row key -> offset of its answer in the shard
        self._replies = 0  # attempts the server answered, whatever it said
        self._longest_retry_after = 0.0
        self._counts: Counter = Counter()
        self._cost = 0.0
        # Grant times by lease, then of the attempts that reported back: a grant to a caller that
        # died while it queued was never sent, so requests are counted when they report.
        self._granted: dict[int, float] = {}
        self._taken: dict[int, int] = {}  # tokens the --tpm bucket took for a lease's request
        self._grants: list[float] = []
        self._reaper: asyncio.Task | None = None

    async def acquire(self, key: str, holder: str, tokens: int) -> dict[str, Any]:
        """Whether to send row ``key`` (``tokens`` estimated) now: ``{"lease": n}`` go, ``{"answered":
        record}`` it was answered already, ``{"stop": why}`` stop asking (or, for REVOKED, ask again)."""
        self._start_reaper()
        if verdict := self._verdict(key):
            return verdict
        lease = await self._leases.take(holder)
        if lease is None:
            return {"stop": REVOKED}
        try:
            while (wait := self._paused_until - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            taken = await self._tokens.take(tokens) if self._tokens else 0
            await self._limiter.acquire()
        except BaseException:
            self._leases.give_back(lease)
            raise
        if verdict := self._verdict(key) or (None if self._leases.alive(holder) else {"stop": REVOKED}):
            # Decided while this caller queued, or the caller was taken for dead meanwhile.
            self._leases.give_back(lease)
            if self._tokens:
                self._tokens.settle(taken, 0)
            return verdict
        self._granted[lease] = time.time()
        self._taken[lease] = taken
        return {"lease": lease}

    def _verdict(self, key: str) -> dict[str, Any] | None:
        if key in self._answers:
            self._counts["resends_avoided"] += 1
            return {"answered": self._shard.read_at(self._answers[key])}
        return {"stop": self._stop} if self._stop else None

    def join(self, holder: str, actor_id: str) -> None:
        """A Labeler process started (a restarted actor's old process is dead: its slots return)."""
        self._leases.join(holder, actor_id)

    def beat(self, holder: str) -> None:
        self._leases.beat(holder)

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            self._leases.reap()

    def done(self, outcome: dict[str, Any], result: dict[str, Any] | None = None) -> None:
        """One attempt finished: its slot back, its tokens settled, its figures booked and logged, and
        the row's result recorded if it is final (in the same call, so an actor killed right after
        a paid answer cannot lose it)."""
        self._leases.give_back(outcome["lease"])
        self._grants.append(self._granted.pop(outcome["lease"], time.time()))
        self._counts["requests"] += 1
        taken, used = self._taken.pop(outcome["lease"], outcome["estimate"]), outcome.get("used_tokens")
        self._counts["limit_tokens"] += taken if used is None else used  # as a --tpm limit counts them
        if self._tokens:
            self._tokens.settle(taken, used, outcome["estimate"])
        self._book(outcome)
        if result is not None:
            self.record(result)

    def _book(self, outcome: dict[str, Any]) -> None:
        kind = outcome.get("kind", "ok")
        self._attempts.write(
            {
                "t": round(time.time(), 3),
                "kind": kind,
                "retry": bool(outcome.get("retry")),
                **{k: outcome.get(k) or 0 for k in ("prompt_tokens", "completion_tokens", "cost_usd")},
            }
        )
        self._replies += kind not in NO_ANSWER
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
        """A row's final result: durable in the cache before the worker moves on, and never asked again."""
        if answers.cacheable(result):
            self._answers[result["key"]] = self._shard.write(result)

    async def reachable(self, timeout_s: float) -> bool:
        """Whether the server has answered any attempt of this job; asked by a row whose last attempt
        failed to connect. Waits for the attempts still in flight first (a row that fails fast must
        not end the job while others are about to get answers), but no longer than one reply may
        take (``--timeout``)."""
        deadline = time.monotonic() + timeout_s + 1.0
        while not self._replies and self._leases.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(REACHABLE_POLL_S)
        return self._replies > 0

    def abort(self, reason: str) -> None:
        """A job-wide failure (key rejected, server unreachable): every worker stops asking."""
        if self._fatal is None:
            self._fatal = reason
        self._stop = "fatal"

    def stats(self) -> dict[str, Any]:
        counts = dict(self._counts)
        grants = sorted(self._grants)
        span = grants[-1] - grants[0] if len(grants) > 1 else 0.0
        # Requests over the span they were granted in: what the limiter actually let through
        # (none under a second: a first burst is no rate).
        rpm = (len(grants) - 1) / span * 60 if span >= 1.0 else None
        return {
            **counts,
            "cost_usd": self._cost,
            "longest_retry_after_s": self._longest_retry_after,
            "stopped": self._stop,
            "fatal": self._fatal,
            "leases_revoked": self._leases.revoked,
            "first_request": grants[0] if grants else None,
            "last_request": grants[-1] if grants else None,
            "achieved_rpm": rpm,
            # The achieved request rate times the tokens a request counted against --tpm.
            "achieved_tpm": rpm * counts.get("limit_tokens", 0) / len(grants) if rpm is not None else None,
        }

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        self._shard.close()
        self._attempts.close()
