"""The platform's cache folder: synthetic data sets and other files written once and reused.

Used by every trainable's synthetic set (``python -m platform.run asl`` with no ``--data``).
``RAYPLATFORM_CACHE`` moves it from ``~/.cache/rayplatform``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("RAYPLATFORM_CACHE") or Path.home() / ".cache" / "rayplatform")


def write_once(folder: Path, write: Callable[[Path], None]) -> Path:
    """``folder``, written by ``write(partial)`` into a temporary sibling then renamed, unless it
    exists: a killed writer never leaves half a folder, and concurrent writers agree on one."""
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        write(partial)
        partial.chmod(0o755)  # mkdtemp makes it private; other users' Ray workers may read it
        partial.rename(folder)
    except OSError:
        if not folder.is_dir():  # not another process finishing first: a real failure
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder
