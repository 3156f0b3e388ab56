"""Files a crash cannot leave half-written: temporary name, fsync, rename, fsync of the folder.

Used by every file ``python -m platform.run asl`` writes into a run directory (config, manifest,
history, ``best_model.pt``) and by the preprocessed store's shards: a reader (``platform.monitor``,
``platform.predict``, a resumed run) sees the old file or the new one, never a torn one, and a
power loss after the rename keeps the new one.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_bytes(path: str | Path, data: bytes) -> None:
    """``data`` at ``path``, whole or not at all, and durable before it is visible under its name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power loss
    finally:
        os.close(folder)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))
