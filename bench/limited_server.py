"""The loopback OpenAI-compatible server of tests/openai_server.py, with a requests-per-minute limit.

Used by ``python -m bench.label_throughput``. ``FakeOpenAI`` answers 429 only where a test scripts
it; a paid API answers 429 once a key goes over its rate. This subclass (kept in bench/, the test
server unchanged) puts a token bucket in front of every authorised call: it holds one second's requests
plus one (the timer slack tests/test_label.py allows too) and refills at ``rpm / 60`` a second; an
empty bucket gets 429 with ``retry-after-ms`` and ``Retry-After`` (whole seconds), as OpenAI sends.
"""

from __future__ import annotations

import importlib.util
import math
import time

from aiohttp import web

from bench.common import REPO_ROOT


def _load_fake_openai() -> type:
    """tests/ is not a package: load the server module from its file."""
    spec = importlib.util.spec_from_file_location("openai_server", REPO_ROOT / "tests" / "openai_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FakeOpenAI


FakeOpenAI = _load_fake_openai()


class RateLimitedOpenAI(FakeOpenAI):
    def __init__(self, rpm: float, **kwargs):
        super().__init__(**kwargs)
        self.rate = rpm / 60
        self.capacity = math.floor(self.rate) + 1
        self._tokens = float(self.capacity)
        self._refilled = time.monotonic()

    def _wait_for_token(self) -> float:
        """0 when a request may go now (and takes its token), else the seconds until one is due.
        Called only from the server's event loop, so no lock is needed."""
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") == f"Bearer {self.key}":
            wait = self._wait_for_token()
            if wait:
                self._log(time.time(), "", "rate_limit", 429, False)
                headers = {"retry-after-ms": f"{wait * 1000:.0f}", "Retry-After": str(math.ceil(wait))}
                return web.json_response({"error": {"message": "rate limit exceeded", "code": 429}},
                                         status=429, headers=headers)
        return await super()._chat(request)

    def calls_since(self, start: int) -> list[dict]:
        with self._lock:
            return list(self.calls[start:])
