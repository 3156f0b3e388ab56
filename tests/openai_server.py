"""A real OpenAI-compatible chat-completions server on loopback, for labeling tests and offline demos.

    .venv/bin/python tests/openai_server.py --port 8765 [--key test-key] [--latency 0.1]
        [--script '{"#flaky": ["429", "500"], "#late": ["expire"]}'] [--refuse-response-format] [--batch-polls 2]
    OPENROUTER_API_KEY=test-key .venv/bin/python -m platform.label ../shared/datasets/social \\
        --base-url http://127.0.0.1:8765/v1 --price-in 1 --price-out 1 --out labeled-by-test-server

Serves ``POST /v1/chat/completions`` with the OpenAI response schema (``usage`` included), on
127.0.0.1. The caption is the last text part of the last user message (a leading ``Caption:`` is
dropped); the reply is ``{"score": expected_score(caption), "reason": ...}`` (a structured request's
label property in place of ``score``: ``_label_field``), every other one in a
code fence, unless the request asks for structured output (``response_format`` of type
``json_schema``): its schema must then be there, an object with ``score`` and ``reason``
properties (else 400), and the reply is that JSON object alone. With ``refuse_format``
(``--refuse-response-format``) any ``response_format`` gets the 400 of providers without structured
outputs: ``Invalid parameter: response_format ...``. A wrong ``Authorization: Bearer`` key gets
401. ``script`` maps a substring of the caption to the behaviours of that caption's successive
calls (then ``ok``): ``429`` (with Retry-After: ``retry_after`` seconds), ``500``, ``malformed`` (a
body that is not JSON), ``not_json`` (content that is not JSON), ``out_of_range`` (score 42, even
in structured mode), ``slow`` (waits ``slow_s`` before answering), ``drop`` (closes the connection
without a response: the client sees a connection error).
The Batch API too (tests/openai_batches.py).
Every call is logged (``calls``: time, caption, behaviour, status, whether it carried an image, its
``response_format``, when it was answered, and ``delivered``: whether the client was still there to
read the answer; a client killed or timed out first never does) for rate and count checks.
``hold_after(n)`` answers the first n calls and holds every later answer until ``release()``:
a test can then kill a client at a moment when no answer is on its way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import defaultdict

from aiohttp import web
from openai_batches import BatchAPI
from openai_replies import caption_and_image, chat_answer


class FakeOpenAI(BatchAPI):
    def __init__(
        self,
        key: str = "test-key",
        latency: float = 0.0,
        script: dict[str, list[str]] | None = None,
        retry_after: float = 1.0,
        slow_s: float = 5.0,
        port: int = 0,
        refuse_format: bool = False,
        batch_polls: int = 2,
    ):
        self.key, self.latency, self.retry_after, self.slow_s = key, latency, retry_after, slow_s
        self.refuse_format = refuse_format
        self.batch_polls = batch_polls  # GETs of a batch before it ends
        self.files: dict[str, dict] = {}  # id -> purpose, filename, data
        self.batches: dict[str, dict] = {}  # id -> the batch object, plus "polls"
        self.batch_lines: list[dict] = []  # every batch line run: batch, custom_id, caption, status
        self.list_pages: list[str | None] = []  # every page of GET /v1/batches asked: its ``after``
        self.script = {marker: list(steps) for marker, steps in (script or {}).items()}
        self.calls: list[dict] = []
        self._seen: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._requested_port = port
        self._hold_from: int | None = None  # calls from this index on wait for release()
        self._released = threading.Event()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def calls_for(self, caption: str) -> int:
        with self._lock:
            return sum(1 for call in self.calls if call["caption"] == caption)

    @property
    def call_count(self) -> int:
        with self._lock:
            return len(self.calls)

    def hold_after(self, answered: int) -> None:
        with self._lock:
            self._released.clear()
            self._hold_from = answered

    def release(self) -> None:
        self._released.set()

    def held(self) -> int:
        """Calls waiting for release() to be answered."""
        with self._lock:
            return sum(1 for call in self.calls if "replied" not in call and call["index"] >= (self._hold_from or 0))

    def delivered(self) -> list[dict]:
        """Calls answered 200 to a client that was still there."""
        with self._lock:
            return [call for call in self.calls if call.get("delivered") and call["status"] == 200]

    def timestamps(self) -> list[float]:
        with self._lock:
            return [call["t"] for call in self.calls if call["status"] != 401]

    def _behaviour(self, caption: str) -> str:
        with self._lock:
            for marker, steps in self.script.items():
                if marker in caption:
                    nth = self._seen[marker]
                    self._seen[marker] += 1
                    return steps[nth] if nth < len(steps) else "ok"
        return "ok"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        arrived = time.time()
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            self._log(arrived, "", "auth", 401, False)["replied"] = arrived
            return web.json_response(
                {"error": {"message": "invalid API key", "type": "invalid_request_error", "code": "invalid_api_key"}}, status=401
            )
        body = await request.json()
        caption, has_image = caption_and_image(body)
        if refused := self._refusal(body.get("response_format")):
            self._log(arrived, caption, "format_refused", 400, has_image, body["response_format"])["replied"] = arrived
            return web.json_response(
                {"error": {"message": refused, "type": "invalid_request_error", "param": "response_format", "code": None}}, status=400
            )
        behaviour = self._behaviour(caption)
        status = {"429": 429, "500": 500, "drop": 0}.get(behaviour, 200)  # 0: no response at all
        call = self._log(arrived, caption, behaviour, status, has_image, body.get("response_format"))
        if behaviour == "drop":
            call.update(replied=time.time(), delivered=False)
            request.transport.close()  # the response below is never sent
            return web.Response(status=500)
        await asyncio.sleep(self.slow_s if behaviour == "slow" else self.latency)
        while self._hold_from is not None and call["index"] >= self._hold_from and not self._released.is_set():
            await asyncio.sleep(0.02)
        transport = request.transport  # None once the client has closed the connection
        call.update(replied=time.time(), delivered=transport is not None and not transport.is_closing())
        if behaviour == "malformed":
            return web.Response(text='{"id": "chatcmpl-x", "choices": [', content_type="application/json")
        answer, status = chat_answer(body, caption, behaviour, call["index"])
        headers = {"Retry-After": f"{self.retry_after:g}"} if behaviour == "429" else None
        return web.json_response(answer, status=status, headers=headers)

    def _refusal(self, response_format: dict | None) -> str | None:
        """The 400 message for a ``response_format`` this server will not honour, else None."""
        if response_format is None:
            return None
        if self.refuse_format:
            return "Invalid parameter: response_format is not supported with this model."
        schema = (response_format.get("json_schema") or {}).get("schema") if response_format.get("type") == "json_schema" else None
        if not isinstance(schema, dict) or "reason" not in (schema.get("properties") or {}) or len(schema["properties"]) < 2:
            return "Invalid schema for response_format: json_schema.schema needs a label and a reason property."
        return None

    def _log(self, t: float, caption: str, behaviour: str, status: int, has_image: bool, response_format: dict | None = None) -> dict:
        with self._lock:
            call = {
                "t": t,
                "caption": caption,
                "behaviour": behaviour,
                "status": status,
                "has_image": has_image,
                "response_format": response_format,
                "index": len(self.calls),
            }
            self.calls.append(call)
            return call

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._add_batch_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._requested_port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the bound port of port 0

    def start(self) -> FakeOpenAI:
        """Serve from a daemon thread; returns once the port is bound."""
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve():
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop and self._runner:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--key", default="test-key", help="the API key it accepts (default test-key)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds before each reply")
    parser.add_argument("--script", default="{}", help='JSON: caption substring -> behaviours, e.g. {"#x": ["429"]}')
    parser.add_argument(
        "--refuse-response-format",
        action="store_true",
        help="answer requests carrying response_format with a 400, as APIs without structured outputs do",
    )
    parser.add_argument("--batch-polls", type=int, default=2, help="GETs of a batch before it ends (default 2)")
    args = parser.parse_args()
    server = FakeOpenAI(
        key=args.key,
        latency=args.latency,
        script=json.loads(args.script),
        port=args.port,
        refuse_format=args.refuse_response_format,
        batch_polls=args.batch_polls,
    ).start()
    print(f"serving {server.url}/chat/completions (key {args.key!r}); Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
