"""The label cache: one JSON line per answered row, appended and flushed the moment it arrives.

Used by ``python -m platform.label posts.csv`` (default ``<out>/cache/``). Each run appends to its
own shard (``<run id>.jsonl``) so a run resumed while a killed one's actors are still finishing never
shares a file with them. A line torn by a kill is skipped on reading; the row is then asked again.
A record never holds the API key: only the key's absence is ever checked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Quarantines whose reply was paid for (the model answered, badly) are kept so a re-run does not
# pay for them again; transient failures (timeouts, 5xx, 429) are not, so a re-run retries them.
PAID_QUARANTINE = ("invalid_reply",)


def cacheable(record: dict[str, Any]) -> bool:
    if record.get("status") == "labeled":
        return True
    return record.get("status") == "quarantined" and str(record.get("reason", "")).startswith(PAID_QUARANTINE)


def load(folder: Path) -> dict[str, dict[str, Any]]:
    """Every cached record by cache key; later lines win (a retried quarantine can become a label)."""
    records: dict[str, dict[str, Any]] = {}
    if not folder.is_dir():
        return records
    for shard in sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime):
        for record in whole_lines(shard):
            if record.get("key"):
                if "label" not in record and "score" in record:
                    # Written before the task left the platform (gender-bias-v2): same answer, old name.
                    record["label"] = record["score"]
                if record["key"] in records and records[record["key"]].get("status") == "labeled":
                    continue
                records[record["key"]] = record
    return records


def whole_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Each JSON object line of a JSONL file; a line a kill tore is skipped."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


class Shard:
    """An append-only JSONL file; each record is flushed and fsynced before ``write`` returns."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> int:
        """Appends ``record``; returns its offset in the file (``read_at`` reads it back)."""
        offset = self._file.tell()
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        return offset

    def read_at(self, offset: int) -> dict[str, Any]:
        # json.dumps writes ASCII only, so the text file's offset is the byte offset.
        with self.path.open(encoding="utf-8") as lines:
            lines.seek(offset)
            return json.loads(lines.readline())

    def close(self) -> None:
        self._file.close()
