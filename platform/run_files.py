"""The run directory's file names and its JSON, without torch or Ray: what read-only tools need.

Used by ``python -m platform.monitor`` (which must start in well under two seconds) and by
platform/artifacts.py, which writes the run directory during ``python -m platform.run asl``.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from platform import durable

CONFIG_FILE = "config.json"
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.json"
HISTORY_FILE = "history.csv"
BEST_MODEL_FILE = "best_model.pt"
TENSORBOARD_DIR = "tensorboard"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def write_json(path: Path, value: Any) -> None:
    """Atomically, so a reader (the monitor) never sees half a file and a crash never loses one."""
    durable.write_text(path, json.dumps(value, indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def baseline_value(block: dict | None, metric: str, split: str = "val") -> float | None:
    """The manifest's ``baseline`` block's score of ``metric`` (named ``val/...``) on a split, if any."""
    if not block or split not in block:
        return None
    return block[split].get(metric.replace("val/", f"{split}/", 1))
