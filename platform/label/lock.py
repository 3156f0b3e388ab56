"""One labeling run at a time writes into an output folder and its cache: a second is refused at once.

Used by ``python -m platform.label posts.csv [--out DIR] [--cache DIR]`` (not by ``--dry-run``, which
writes nothing). Two runs into one folder would each read the cache before the other's answers are
in it and pay for every row twice, and two batch-mode drivers would tear ``batches.json`` and the
batch input file. So a run holds an exclusive ``flock`` on ``<out>/.label.lock`` and
``<cache>/.label.lock`` (a ``--cache`` elsewhere may be shared by other outputs) from before it
reads the cache until it exits; a run that cannot take one ends with one ``error:`` line, exit 2,
before it writes or sends anything. The kernel drops the lock with the process, so a killed run
never leaves the folder locked; the file stays and is reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from platform.errors import UserError

LOCK_FILE = ".label.lock"


@contextlib.contextmanager
def hold(*folders: Path) -> Iterator[None]:
    """Holds every folder's lock (each folder once, made if missing) while the block runs."""
    with contextlib.ExitStack() as held:
        for folder in dict.fromkeys(folders):
            held.enter_context(_one(folder))
        yield


@contextlib.contextmanager
def _one(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    # Opened without truncating: the holder's pid stays readable until this process has the lock.
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            raise UserError(
                f"another labeling run{f' (pid {holder})' if holder.isdigit() else ''} is writing into {folder}: "
                "wait for it to end (running again then pays only for what it left)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        yield
    finally:
        os.close(fd)
