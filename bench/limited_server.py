"""The loopback OpenAI-compatible server of tests/openai_server.py, with requests- and tokens-per-minute limits.

Used by ``python -m bench.label_throughput``. ``FakeOpenAI`` answers 429 only where a test scripts
it; a paid API answers 429 once a key goes over its rate. This subclass (kept in bench/, the test
server unchanged) puts a token bucket in front of every authorised call: it holds one second's requests
plus one (the timer slack tests/test_label.py allows too) and refills at ``rpm / 60`` a second; an
empty bucket gets 429 with ``retry-after-ms`` and ``Retry-After`` (whole seconds), as OpenAI sends.
With ``tpm``, a second bucket counts tokens as OpenAI does when it lets a request in: its prompt (the
server's own count, the ``usage.prompt_tokens`` it replies with) plus its ``max_tokens``; it holds one
second's tokens plus one request's.
"""

from __future__ import annotations

import math
import sys
import time

from aiohttp import web

from bench.common import REPO_ROOT

# tests/ is not a package: its modules import each other by name, so it goes on the path.
sys.path.insert(0, str(REPO_ROOT / "tests"))
from openai_replies import PROMPT_TOKENS  # noqa: E402
from openai_server import FakeOpenAI  # noqa: E402


class Bucket:
    """``rate`` a second, up to ``capacity``; only the server's event loop calls it, so no lock."""

    def __init__(self, rate: float, capacity: float):
        self.rate, self.capacity, self._level, self._at = rate, capacity, capacity, time.monotonic()

    def wait(self, amount: float) -> float:
        """0 when ``amount`` is there now, else the seconds until it is."""
        now = time.monotonic()
        self._level, self._at = min(self.capacity, self._level + (now - self._at) * self.rate), now
        return max(0.0, (amount - self._level) / self.rate)

    def take(self, amount: float) -> None:
        self._level -= amount


class RateLimitedOpenAI(FakeOpenAI):
    def __init__(self, rpm: float, tpm: float | None = None, max_tokens: int = 150, **kwargs):
        super().__init__(**kwargs)
        self.rate = rpm / 60
        self.capacity = math.floor(self.rate) + 1
        self.requests = Bucket(self.rate, self.capacity)
        self.tokens = Bucket(tpm / 60, tpm / 60 + PROMPT_TOKENS + max_tokens) if tpm else None
        self.admitted_tokens: list[tuple[float, int]] = []  # (time, tokens) of every request let in

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") == f"Bearer {self.key}":
            cost = PROMPT_TOKENS + int((await request.json()).get("max_tokens") or 0)
            wait = max(self.requests.wait(1), self.tokens.wait(cost) if self.tokens else 0.0)
            if not wait:
                self.requests.take(1)
                if self.tokens:
                    self.tokens.take(cost)
                self.admitted_tokens.append((time.time(), cost))
            else:
                self._log(time.time(), "", "rate_limit", 429, False)
                headers = {"retry-after-ms": f"{wait * 1000:.0f}", "Retry-After": str(math.ceil(wait))}
                return web.json_response({"error": {"message": "rate limit exceeded", "code": 429}}, status=429, headers=headers)
        return await super()._chat(request)

    def tokens_share(self, start: int) -> float:
        """Tokens let in since the ``start``-th admitted request, as a share of the most the tokens
        bucket allows over their span."""
        admitted = self.admitted_tokens[start:]
        span = admitted[-1][0] - admitted[0][0] if admitted else 0.0
        return sum(cost for _, cost in admitted) / (self.tokens.capacity + span * self.tokens.rate)

    def calls_since(self, start: int) -> list[dict]:
        with self._lock:
            return list(self.calls[start:])
