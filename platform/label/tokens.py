"""The job's tokens-per-minute limit (``--tpm``): a token bucket charged before each send, settled after.

Used by the Gate of ``python -m platform.label posts.csv --tpm 200000``. A provider counts a
request against its TPM limit before running it, by its prompt and its ``max_tokens`` (the most it
may write), so that is what each attempt takes from the bucket (the task estimates it:
platform/label/task.py); the reply's ``usage`` then says what the provider counted (its prompt
tokens, and ``max_tokens``), and the difference is given back or charged (the level may go below
zero: later sends wait it off). Our estimate counts 4 characters a token; the provider's tokenizer
does not, so later sends are charged at the estimate times what replies have shown so far
(``scale``): without that, a 3x low estimate sends at 3x the limit until each reply's debt lands.
Until the first request has settled, nothing else is sent (for at most FIRST_REPLY_WAIT_S): the
requests queued behind it would all go at an estimate no reply has checked yet.
The bucket holds one second's tokens (a request larger than that waits for a full bucket and leaves
it in debt), so a burst stays small and the long-run rate is the limit.
"""

from __future__ import annotations

import asyncio
import time

FIRST_REPLY_WAIT_S = 10.0


class TokenBucket:
    def __init__(self, tokens_per_minute: float):
        self.rate = tokens_per_minute / 60  # tokens a second
        self.capacity = self.rate
        self._level = self.capacity
        self._at = time.monotonic()
        # One waiter at a time, in arrival order: a large request is not starved by small ones.
        self._turn = asyncio.Lock()
        self._estimated = self._used = 0  # over the replies that reported their usage
        self._settled = asyncio.Event()  # set once any request has settled
        self._taken = 0  # requests taken so far

    @property
    def scale(self) -> float:
        """The provider's count over our estimate, so far (1 before any reply)."""
        return self._used / self._estimated if self._estimated else 1.0

    async def take(self, estimate: int) -> int:
        """Waits until the request's tokens (``estimate`` x ``scale``, at most a full bucket) are
        there, then takes them all; returns what it took (what ``settle`` is given back)."""
        async with self._turn:
            if self._taken and not self._settled.is_set():
                try:
                    await asyncio.wait_for(self._settled.wait(), FIRST_REPLY_WAIT_S)
                except TimeoutError:
                    pass  # a first reply that never comes (a stall, a dead actor) holds no one longer
            self._taken += 1
            tokens = round(estimate * self.scale)
            while (short := min(tokens, self.capacity) - self._refill()) > 0:
                await asyncio.sleep(short / self.rate)
            self._level -= tokens
            return tokens

    def settle(self, taken: int, used: int | None, estimate: int = 0) -> None:
        """A request taken at ``taken`` tokens used ``used`` (None: no usage reported, the charge
        stands; 0: never run): the difference is given back or charged. ``estimate``, our own count
        of a request that ran, teaches ``scale``."""
        self._refill()
        self._settled.set()
        if used is None:
            return
        if used and estimate:
            self._estimated += estimate
            self._used += used
        self._level = min(self.capacity, self._level + taken - used)

    def _refill(self) -> float:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._at) * self.rate)
        self._at = now
        return self._level
