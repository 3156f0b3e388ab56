"""The job's tokens-per-minute limit (``--tpm``): a token bucket charged before each send, settled after.

Used by the Gate of ``python -m platform.label posts.csv --tpm 200000``. A provider counts a
request against its TPM limit before running it, by its prompt and its ``max_tokens`` (the most it
may write), so that is what each attempt takes from the bucket (platform/labeling/prompt.py
estimates it); the reply's ``usage`` then says what it really used, and the difference is given
back or charged (the level may go below zero: later sends wait it off). The bucket holds one
second's tokens (a request larger than that waits for a full bucket and leaves it in debt), so a
burst stays small and the long-run rate is the limit.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, tokens_per_minute: float):
        self.rate = tokens_per_minute / 60  # tokens a second
        self.capacity = self.rate
        self._level = self.capacity
        self._at = time.monotonic()
        # One waiter at a time, in arrival order: a large request is not starved by small ones.
        self._turn = asyncio.Lock()

    async def take(self, tokens: int) -> None:
        """Waits until ``tokens`` (at most a full bucket) are there, then takes them all."""
        async with self._turn:
            while (short := min(tokens, self.capacity) - self._refill()) > 0:
                await asyncio.sleep(short / self.rate)
            self._level -= tokens

    def settle(self, estimated: int, used: int) -> None:
        """A reply's usage corrects its estimate: the difference is given back or charged."""
        self._refill()
        self._level = min(self.capacity, self._level + estimated - used)

    def _refill(self) -> float:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._at) * self.rate)
        self._at = now
        return self._level
