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
The Batch API too: ``POST /v1/files`` (multipart, purpose=batch), ``GET /v1/files/{id}/content``,
``POST /v1/batches``, ``GET /v1/batches`` and ``GET /v1/batches/{id}``; a batch stays in progress
until its ``batch_polls``-th GET, then runs its lines as chat completions (the same script and
replies) into an output and an error file: a line scripted ``expire`` is never run and the batch
ends ``expired``, a line answered other than 200 (``500``, ``429``, a refused ``response_format``)
goes to the error file, and an input file with a malformed line fails the batch. ``files``,
``batches`` and ``batch_lines`` (every line run: batch, custom_id, caption, status) let tests
count what was uploaded, created and paid.
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

PROMPT_TOKENS = 1000
COMPLETION_TOKENS = 20


def expected_score(caption: str) -> int:
    """The score this server gives a caption: deterministic, so tests can check the labels."""
    return sum(caption.encode("utf-8")) % 11


class FakeOpenAI:
    def __init__(self, key: str = "test-key", latency: float = 0.0, script: dict[str, list[str]] | None = None,
                 retry_after: float = 1.0, slow_s: float = 5.0, port: int = 0, refuse_format: bool = False,
                 batch_polls: int = 2):
        self.key, self.latency, self.retry_after, self.slow_s = key, latency, retry_after, slow_s
        self.refuse_format = refuse_format
        self.batch_polls = batch_polls  # GETs of a batch before it ends
        self.files: dict[str, dict] = {}  # id -> purpose, filename, data
        self.batches: dict[str, dict] = {}  # id -> the batch object, plus "polls"
        self.batch_lines: list[dict] = []  # every batch line run: batch, custom_id, caption, status
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
            return web.json_response({"error": {"message": "invalid API key", "type": "invalid_request_error",
                                                "code": "invalid_api_key"}}, status=401)
        body = await request.json()
        caption, has_image = _caption_and_image(body)
        if refused := self._refusal(body.get("response_format")):
            self._log(arrived, caption, "format_refused", 400, has_image, body["response_format"])["replied"] = arrived
            return web.json_response({"error": {"message": refused, "type": "invalid_request_error",
                                                "param": "response_format", "code": None}}, status=400)
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
        answer, status = _answer(body, caption, behaviour, call["index"])
        headers = {"Retry-After": f"{self.retry_after:g}"} if behaviour == "429" else None
        return web.json_response(answer, status=status, headers=headers)

    # The Batch API: POST /v1/files (multipart, purpose=batch), GET /v1/files/{id}/content, POST
    # /v1/batches, GET /v1/batches/{id}. A batch runs its lines when it is polled the batch_polls-th
    # time, each as a chat completion would (same script, same replies); a line whose behaviour is
    # "expire" is never run: the batch then ends "expired", that line in its error file as
    # batch_expired. A line answered other than 200 goes to the error file with its response.

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.key}"

    def _store_file(self, data: bytes, purpose: str, filename: str) -> dict:
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = {"purpose": purpose, "filename": filename, "data": data}
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}

    async def _upload(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _unauthorized()
        form = await request.post()
        upload = form.get("file")
        if form.get("purpose") != "batch" or not hasattr(upload, "file"):
            return _bad_request("a batch input needs purpose=batch and a file part")
        return web.json_response(self._store_file(upload.file.read(), "batch", upload.filename))

    async def _file_content(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _unauthorized()
        stored = self.files.get(request.match_info["id"])
        if stored is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=stored["data"], content_type="application/octet-stream")

    async def _create_batch(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _unauthorized()
        body = await request.json()
        if body.get("input_file_id") not in self.files or body.get("completion_window") != "24h":
            return _bad_request("input_file_id must name an uploaded file and completion_window be 24h")
        with self._lock:
            batch_id = f"batch_{len(self.batches) + 1}"
            self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
                "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
                "expires_at": int(time.time()) + 86400, "request_counts": {"total": 0, "completed": 0, "failed": 0},
                "metadata": body.get("metadata"), "polls": 0}
        return web.json_response(self._batch_object(batch_id))

    async def _list_batches(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _unauthorized()
        newest_first = [self._batch_object(b) for b in reversed(list(self.batches))]
        return web.json_response({"object": "list", "data": newest_first, "has_more": False})

    async def _get_batch(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _unauthorized()
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        batch["polls"] += 1
        if batch["status"] in ("validating", "in_progress"):
            batch["status"] = "in_progress"
            if batch["polls"] >= self.batch_polls:
                self._run_batch(batch)
        return web.json_response(self._batch_object(batch["id"]))

    def _batch_object(self, batch_id: str) -> dict:
        return {k: v for k, v in self.batches[batch_id].items() if k != "polls"}

    def _run_batch(self, batch: dict) -> None:
        """Runs the batch's lines and ends it: failed (a malformed input file), expired or completed."""
        lines, problem = _batch_lines(self.files[batch["input_file_id"]]["data"], batch["endpoint"])
        if problem:
            batch.update(status="failed", failed_at=int(time.time()),
                         errors={"object": "list", "data": [{"code": "invalid_request", "message": problem}]})
            return
        outputs, errors, expired = [], [], False
        for n, line in enumerate(lines):
            caption, _ = _caption_and_image(line["body"])
            behaviour = self._behaviour(caption)
            entry = {"id": f"batch_req_{batch['id']}_{n}", "custom_id": line["custom_id"]}
            if behaviour == "expire":
                expired = True
                errors.append({**entry, "response": None, "error": {
                    "code": "batch_expired",
                    "message": "This request could not be executed before the completion window expired."}})
                continue
            refused = self._refusal(line["body"].get("response_format"))
            answer, status = ({"error": {"message": refused}}, 400) if refused else \
                _answer(line["body"], caption, behaviour, len(self.batch_lines))
            with self._lock:
                self.batch_lines.append({"batch": batch["id"], "custom_id": line["custom_id"], "caption": caption,
                                         "behaviour": behaviour, "status": status})
            response = {"status_code": status, "request_id": f"req_{len(self.batch_lines)}", "body": answer}
            (outputs if status == 200 else errors).append({**entry, "response": response, "error": None})
        now = int(time.time())
        batch.update(status="expired" if expired else "completed", **{"expired_at" if expired else "completed_at": now},
                     request_counts={"total": len(lines), "completed": len(outputs), "failed": len(errors)})
        for field, entries in (("output_file_id", outputs), ("error_file_id", errors)):
            if entries:
                data = "".join(json.dumps(e) + "\n" for e in entries).encode()
                batch[field] = self._store_file(data, "batch_output", f"{batch['id']}_{field}.jsonl")["id"]

    def _refusal(self, response_format: dict | None) -> str | None:
        """The 400 message for a ``response_format`` this server will not honour, else None."""
        if response_format is None:
            return None
        if self.refuse_format:
            return "Invalid parameter: response_format is not supported with this model."
        schema = (response_format.get("json_schema") or {}).get("schema") \
            if response_format.get("type") == "json_schema" else None
        if not isinstance(schema, dict) or "reason" not in (schema.get("properties") or {}) \
                or len(schema["properties"]) < 2:
            return "Invalid schema for response_format: json_schema.schema needs a label and a reason property."
        return None

    def _log(self, t: float, caption: str, behaviour: str, status: int, has_image: bool,
             response_format: dict | None = None) -> dict:
        with self._lock:
            call = {"t": t, "caption": caption, "behaviour": behaviour, "status": status, "has_image": has_image,
                    "response_format": response_format, "index": len(self.calls)}
            self.calls.append(call)
            return call

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._file_content)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches", self._list_batches)
        app.router.add_get("/v1/batches/{id}", self._get_batch)
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


def _answer(body: dict, caption: str, behaviour: str, index: int) -> tuple[dict, int]:
    """The JSON body and HTTP status a chat completion gets for ``behaviour`` (one that has a body)."""
    if behaviour == "429":
        return {"error": {"message": "rate limited", "code": 429}}, 429
    if behaviour in ("500", "malformed"):  # a batch line cannot be malformed: it fails as a 500
        return {"error": {"message": "upstream failed", "code": 500}}, 500
    score = expected_score(caption)
    name, field = _label_field(body.get("response_format"))
    label = field["enum"][score % len(field["enum"])] if field.get("enum") else score
    reply = {name: 42 if behaviour == "out_of_range" else label, "reason": f"caption checksum {score}"}
    content = json.dumps(reply)
    if behaviour == "not_json":
        content = "I would say this post is about a five."
    elif score % 2 == 0 and not body.get("response_format"):  # structured output: exactly the JSON
        content = f"```json\n{content}\n```"
    return {
        "id": f"chatcmpl-{index}", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "test-model"),
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                  "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS},
    }, 200


def _label_field(response_format: dict | None) -> tuple[str, dict]:
    """The reply's label property (name, schema): a structured request's first that is not ``reason``
    (a number gets ``expected_score``, an enum its member at that index); ``score`` without one."""
    schema = ((response_format or {}).get("json_schema") or {}).get("schema") or {}
    return next(((name, spec) for name, spec in (schema.get("properties") or {}).items() if name != "reason"),
                ("score", {}))


def _batch_lines(data: bytes, endpoint: str) -> tuple[list[dict], str]:
    """The lines of a batch input file, or why the Batch API would fail it at validation."""
    lines, ids = [], set()
    for n, text in enumerate(data.decode("utf-8").splitlines(), start=1):
        try:
            line = json.loads(text)
        except ValueError:
            return [], f"line {n} is not JSON"
        if not isinstance(line, dict) or line.get("method") != "POST" or line.get("url") != endpoint \
                or not isinstance(line.get("body"), dict) or not line.get("custom_id"):
            return [], f"line {n} needs custom_id, method POST, url {endpoint} and a body"
        if line["custom_id"] in ids:
            return [], f"line {n}: custom_id {line['custom_id']!r} is not unique"
        ids.add(line["custom_id"])
        lines.append(line)
    return lines, "" if lines else "the input file has no lines"


def _unauthorized() -> web.Response:
    return web.json_response({"error": {"message": "invalid API key", "type": "invalid_request_error",
                                        "code": "invalid_api_key"}}, status=401)


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=400)


def _caption_and_image(body: dict) -> tuple[str, bool]:
    messages = [m for m in body.get("messages", []) if m.get("role") == "user"]
    content = messages[-1].get("content", "") if messages else ""
    parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
    texts = [p.get("text", "") for p in parts if p.get("type") == "text"]
    has_image = any(p.get("type") == "image_url" and str(p.get("image_url", {}).get("url", "")).startswith("data:image/")
                    for p in parts)
    caption = texts[-1] if texts else ""
    return (caption[len("Caption:"):].strip() if caption.startswith("Caption:") else caption), has_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--key", default="test-key", help="the API key it accepts (default test-key)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds before each reply")
    parser.add_argument("--script", default="{}", help='JSON: caption substring -> behaviours, e.g. {"#x": ["429"]}')
    parser.add_argument("--refuse-response-format", action="store_true",
                        help="answer requests carrying response_format with a 400, as APIs without "
                             "structured outputs do")
    parser.add_argument("--batch-polls", type=int, default=2, help="GETs of a batch before it ends (default 2)")
    args = parser.parse_args()
    server = FakeOpenAI(key=args.key, latency=args.latency, script=json.loads(args.script), port=args.port,
                        refuse_format=args.refuse_response_format, batch_polls=args.batch_polls).start()
    print(f"serving {server.url}/chat/completions (key {args.key!r}); Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
