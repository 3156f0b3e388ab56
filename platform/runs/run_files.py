"""The run directory's file names and its JSON, without torch or Ray: what read-only tools need.

Used by ``python -m platform.monitor`` (which must start in well under two seconds) and by
platform/runs/artifacts.py, which writes the run directory during ``python -m platform.run asl``.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from platform.data.cache import cache_root
from platform.runs import durable

CONFIG_FILE = "config.json"
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.json"
HISTORY_FILE = "history.csv"
BEST_MODEL_FILE = "best_model.pt"
TENSORBOARD_DIR = "tensorboard"
# Created exclusively in a new run or sweep folder: of two commands that chose one name, only the
# one that created it goes on (a name check followed by a write would let both through).
CLAIM_FILE = ".claimed"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def default_name(prefix: str) -> str:
    """``<prefix>-<YYYYmmdd-HHMMSS>-<6 hex>``: sorted by time, and two started in the same second
    (a shell loop, a sweep and a run) still differ."""
    return f"{prefix}-{datetime.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def claim(folder: Path) -> bool:
    """Make ``folder`` this process's, atomically: False when another run or sweep has it (it holds
    files, or the claim of a live command). Call it holding this machine's lock on the folder
    (:func:`hold`): a claim this machine wrote whose folder is still empty is then one a killed
    command left, and is taken over."""
    folder.mkdir(parents=True, exist_ok=True)
    if any(entry.name != CLAIM_FILE for entry in folder.iterdir()):
        return False
    try:
        descriptor = os.open(folder / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if not is_left_behind(claimed_by(folder)):
            return False
        durable.write_bytes(folder / CLAIM_FILE, claim_record())
        return True
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(claim_record())
    return True


def claim_record() -> bytes:
    return (json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "claimed": now()}) + "\n").encode()


def claimed_by(folder: Path) -> dict:
    """Who claimed ``folder`` (pid, host, when); an empty record when the claim is unreadable."""
    try:
        record = read_json(folder / CLAIM_FILE)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def is_left_behind(record: dict) -> bool:
    """A claim this machine wrote, seen by a process holding this machine's lock on the run: the
    command that wrote it is gone (killed before it wrote the run's config). An unreadable claim
    is one torn as it was written."""
    return record.get("host") in (None, os.uname().nodename)


def hold(run: str) -> int | None:
    """This machine's lock on the run at ``run`` (its folder or URI) while this process trains it:
    a file descriptor, or None when another live process holds it. The operating system lets go
    when the process ends, however it ends, so a lock that is held means a driver that is alive.
    The lock file is in the platform cache, never in the run directory (nor uploaded with it)."""
    folder = cache_root() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(run.encode()).hexdigest()[:24]}.lock"
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def let_go(descriptor: int | None) -> None:
    """End :func:`hold` before the process does (a notebook trains several runs)."""
    if descriptor is not None:
        os.close(descriptor)


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
