"""The files of a Batch-API labeling run: the saved batch ids, the JSONL requests, the result lines.

Used by ``python -m platform.label posts.csv --batch`` (platform/label/batch.py runs the batches).

- ``<out>/batches.json`` (``State``): every input file and batch this output folder has asked for,
  rewritten atomically (write, fsync, rename) the moment an id exists, so a driver killed at any
  point leaves the ids a re-run needs to resume polling instead of paying again. It holds ids,
  counts and statuses only: never the key, never an image.
- ``request_line``: one JSONL line of the input file, ``custom_id`` the row's cache key and ``body``
  what online mode sends (the task's ``request``: platform/label/task.py), so a result maps back
  to the cache exactly.
- ``read_result``: one line of a batch's output or error file as the cache record online mode
  writes (labeled, or quarantined with its specific reason) and the attempt it was for the ledger.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from platform.label import reply
from platform.label.task import Task

BATCH_DISCOUNT = 0.5  # OpenAI's Batch API price: half the online price
DEFAULT_POLL_S = 30.0

STATE_FILE = "batches.json"
ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
# OpenAI's limits for one batch's input file: 50,000 requests and 200 MB (some headroom kept).
MAX_LINES = 50_000
MAX_BYTES = 190 * 2**20
# Statuses after which a batch changes no more.
FINAL = ("completed", "failed", "expired", "cancelled")


class State:
    """``<out>/batches.json``: ``batches`` (input_file_id, id, rows, estimate_usd, structured, status,
    collected) and ``structured`` (False once the API refused ``response_format``)."""

    def __init__(self, out: Path):
        self.path = out / STATE_FILE
        data = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        self.batches: list[dict[str, Any]] = data.get("batches", [])
        self.structured: bool = data.get("structured", True)

    def open(self) -> list[dict[str, Any]]:
        """Entries whose results are not in the cache yet: a file without a batch, or a batch."""
        return [entry for entry in self.batches if not entry.get("collected")]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as file:
            json.dump({"batches": self.batches, "structured": self.structured}, file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self.path)


def request_line(task: Task, row: dict[str, Any], image: bytes, model: str, structured: bool) -> str:
    """The row's request as a line of a batch input file: the body online mode would send."""
    body = task.request(model, image, row["mime"], row["text"], structured)
    return json.dumps({"custom_id": row["key"], "method": "POST", "url": ENDPOINT, "body": body}) + "\n"


def estimate_usd(task: Task, row: dict[str, Any], price: tuple[float, float] | None) -> float:
    """The most a row's request may cost (its prompt estimate and all of ``max_tokens``) at ``price``
    (already the batch price): what the budget is checked on before a batch is created."""
    if price is None:
        return 0.0
    prompt_tokens = task.prompt_tokens(row["text"], row["image_tokens"])
    return (prompt_tokens * price[0] + task.generation["max_tokens"] * price[1]) / 1e6


def blank(task: Task, key: str, row_id: str, model: str, batch_id: str | None) -> dict[str, Any]:
    """A row's record before its result is read (online mode's fields, plus the batch it came from)."""
    return {
        "key": key,
        "id": row_id,
        "status": "skipped",
        "label": None,
        "reason": "",
        "model": model,
        "prompt_version": task.version,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": 0.0,
        "latency_s": None,
        "attempts": 0,
        "batch": batch_id,
    }


def read_result(task: Task, entry: dict[str, Any], record: dict[str, Any], price: tuple[float, float] | None) -> str | None:
    """Fills ``record`` from one output or error line; returns the attempt's kind for the ledger
    (``ok``, ``invalid_reply``, ``http_<code>``, ``format_refused``), or None for a line that was
    never run (``batch_expired``: not a request, nothing paid)."""
    response, error = entry.get("response") or None, entry.get("error") or None
    if response is None:
        code = str((error or {}).get("code") or "batch_error")
        why = " ".join(str((error or {}).get("message") or "no result").split())[:160]
        record.update(status="quarantined", reason=f"{code}: {why}" if code.startswith("batch_") else f"batch_error: {code}: {why}")
        return None
    record["attempts"] = 1
    status, body = int(response.get("status_code") or 0), response.get("body") or {}
    if status != 200:
        message = _message(body)
        if reply.refused(status, message):
            record.update(reason=f"format_refused: {message}")  # left "skipped": sent again without it
            return "format_refused"
        record.update(
            status="quarantined", reason=f"http_{status}: {message}" if status < 500 else f"http_{status}: server error in the batch"
        )
        return f"http_{status}"
    _book(body.get("usage") or {}, record, price)
    choices = body.get("choices") or []
    content = (choices[0].get("message") or {}).get("content") if choices else None
    try:
        label, why = task.parse(content)
    except reply.ReplyError as err:
        record.update(status="quarantined", reason=f"invalid_reply: {err}")
        return "invalid_reply"
    record.update(status="labeled", label=label, reason=why)
    return "ok"


def _book(usage: dict[str, Any], record: dict[str, Any], price: tuple[float, float] | None) -> None:
    record["prompt_tokens"] = int(usage.get("prompt_tokens") or 0)
    record["completion_tokens"] = int(usage.get("completion_tokens") or 0)
    reported = usage.get("cost")  # a provider that reports the cost reports what it charged for the batch
    price_in, price_out = price or (0.0, 0.0)
    record["cost_usd"] = round(
        float(reported)
        if isinstance(reported, (int, float))
        else (record["prompt_tokens"] * price_in + record["completion_tokens"] * price_out) / 1e6,
        10,
    )


def _message(body: dict[str, Any]) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else (error or body)
    return " ".join(str(message or "").split())[:160]


def parse_lines(text: str) -> list[dict[str, Any]]:
    """The JSON object lines of a downloaded output or error file (a blank or torn line skipped)."""
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("custom_id"):
            entries.append(entry)
    return entries
