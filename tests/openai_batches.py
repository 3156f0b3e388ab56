"""The Batch API of the loopback OpenAI-compatible server (tests/openai_server.py): ``POST /v1/files``
(multipart, purpose=batch), ``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET
/v1/batches`` (newest first, paged as OpenAI's: ``limit``, ``after``, ``has_more``, ``last_id``) and
``GET /v1/batches/{id}``; a batch stays in progress until its ``batch_polls``-th GET, then runs its
lines as chat completions (the same script and replies) into an output and an error file: a line
scripted ``expire`` is never run and the batch ends ``expired``, a line answered other than 200
(``500``, ``429``, a refused ``response_format``) goes to the error file, and an input file with a
malformed line fails the batch. ``files``, ``batches``, ``batch_lines`` (every line run: batch,
custom_id, caption, status) and ``list_pages`` let tests count what was uploaded, created, paid
and listed.

    .venv/bin/python -m pytest tests/test_label_batch.py
"""

from __future__ import annotations

import json
import time

from aiohttp import web
from openai_replies import caption_and_image, chat_answer

LIST_DEFAULT, LIST_MOST = 20, 100  # batches a page of GET /v1/batches, as OpenAI's


class BatchAPI:
    """The Batch API's routes, mixed into ``FakeOpenAI``: it uses the server's key, lock, script
    (``_behaviour``) and ``_refusal``."""

    def _add_batch_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._file_content)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches", self._list_batches)
        app.router.add_get("/v1/batches/{id}", self._get_batch)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.key}"

    def _store_file(self, data: bytes, purpose: str, filename: str) -> dict:
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = {"purpose": purpose, "filename": filename, "data": data}
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }

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
                "id": batch_id,
                "object": "batch",
                "endpoint": body.get("endpoint"),
                "errors": None,
                "input_file_id": body["input_file_id"],
                "completion_window": "24h",
                "status": "validating",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": int(time.time()),
                "expires_at": int(time.time()) + 86400,
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
                "metadata": body.get("metadata"),
                "polls": 0,
            }
        return web.json_response(self._batch_object(batch_id))

    async def _list_batches(self, request: web.Request) -> web.Response:
        """A page of the batches, newest first, as OpenAI pages them: ``limit`` (1..100, default 20)
        after the batch ``after`` names; ``has_more`` says whether older ones follow. Every page
        asked for is logged in ``list_pages`` (its ``after``)."""
        if not self._authorized(request):
            return _unauthorized()
        try:
            limit = int(request.query.get("limit", LIST_DEFAULT))
        except ValueError:
            return _bad_request("limit must be an integer")
        if not 1 <= limit <= LIST_MOST:
            return _bad_request(f"limit must be between 1 and {LIST_MOST}")
        newest_first = list(reversed(list(self.batches)))
        after = request.query.get("after")
        if after is not None and after not in self.batches:
            return _bad_request(f"no batch {after!r} to list after")
        start = newest_first.index(after) + 1 if after else 0
        page = [self._batch_object(b) for b in newest_first[start : start + limit]]
        with self._lock:
            self.list_pages.append(after)
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": start + limit < len(newest_first),
            }
        )

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
            batch.update(
                status="failed",
                failed_at=int(time.time()),
                errors={"object": "list", "data": [{"code": "invalid_request", "message": problem}]},
            )
            return
        outputs, errors, expired = [], [], False
        for n, line in enumerate(lines):
            caption, _ = caption_and_image(line["body"])
            behaviour = self._behaviour(caption)
            entry = {"id": f"batch_req_{batch['id']}_{n}", "custom_id": line["custom_id"]}
            if behaviour == "expire":
                expired = True
                errors.append(
                    {
                        **entry,
                        "response": None,
                        "error": {
                            "code": "batch_expired",
                            "message": "This request could not be executed before the completion window expired.",
                        },
                    }
                )
                continue
            refused = self._refusal(line["body"].get("response_format"))
            answer, status = (
                ({"error": {"message": refused}}, 400) if refused else chat_answer(line["body"], caption, behaviour, len(self.batch_lines))
            )
            with self._lock:
                self.batch_lines.append(
                    {"batch": batch["id"], "custom_id": line["custom_id"], "caption": caption, "behaviour": behaviour, "status": status}
                )
            response = {"status_code": status, "request_id": f"req_{len(self.batch_lines)}", "body": answer}
            (outputs if status == 200 else errors).append({**entry, "response": response, "error": None})
        now = int(time.time())
        batch.update(
            status="expired" if expired else "completed",
            **{"expired_at" if expired else "completed_at": now},
            request_counts={"total": len(lines), "completed": len(outputs), "failed": len(errors)},
        )
        for field, entries in (("output_file_id", outputs), ("error_file_id", errors)):
            if entries:
                data = "".join(json.dumps(e) + "\n" for e in entries).encode()
                batch[field] = self._store_file(data, "batch_output", f"{batch['id']}_{field}.jsonl")["id"]


def _batch_lines(data: bytes, endpoint: str) -> tuple[list[dict], str]:
    """The lines of a batch input file, or why the Batch API would fail it at validation."""
    lines, ids = [], set()
    for n, text in enumerate(data.decode("utf-8").splitlines(), start=1):
        try:
            line = json.loads(text)
        except ValueError:
            return [], f"line {n} is not JSON"
        if (
            not isinstance(line, dict)
            or line.get("method") != "POST"
            or line.get("url") != endpoint
            or not isinstance(line.get("body"), dict)
            or not line.get("custom_id")
        ):
            return [], f"line {n} needs custom_id, method POST, url {endpoint} and a body"
        if line["custom_id"] in ids:
            return [], f"line {n}: custom_id {line['custom_id']!r} is not unique"
        ids.add(line["custom_id"])
        lines.append(line)
    return lines, "" if lines else "the input file has no lines"


def _unauthorized() -> web.Response:
    return web.json_response(
        {"error": {"message": "invalid API key", "type": "invalid_request_error", "code": "invalid_api_key"}}, status=401
    )


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=400)
