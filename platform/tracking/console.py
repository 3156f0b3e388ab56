"""What a command prints: its own lines, and Ray's only where they say something to the user.

Used by ``python -m platform.run asl [--verbose]`` (and ``platform.tune``, ``platform.label``)
through ``platform/cluster.py``. Ray forwards every worker's output to the driver, including its
C++ core's log lines (``core_worker.cc:2465: Actor with class name: 'PreemptionWatcher'...``
on every run) and tracebacks of its internal actors, and its Python loggers announce token
authentication and the local instance; they read like errors and are not the user's. Without
``--verbose`` those are held back here; they stay in the Ray session's log files either way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

HANDLER = "ray_print_logs"  # the name Ray gives its handler of forwarded worker output
# "[2026-12-03 03:34:23,315 E 28330 28395] core_worker.cc:2465: ..."
CORE_LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,.]+ [DIWEF] \d+ \d+\] [\w/.-]+\.(cc|h):\d+:")
# Ray Train's own bookkeeping actors: what they print is about Ray, not the run (the run's errors
# come from its controller and workers, which stay).
RAY_INTERNAL_ACTORS = ("PlacementGroupCleaner", "PreemptionWatcher")


def kept(data: dict[str, Any]) -> dict[str, Any] | None:
    """A batch of forwarded lines without Ray's noise; None when nothing is left."""
    if data.get("actor_name") in RAY_INTERNAL_ACTORS:
        return None
    lines = [line for line in data.get("lines", []) if not CORE_LOG_LINE.match(line)]
    return {**data, "lines": lines} if lines else None


def ray_logging_level(verbose: bool) -> int:
    """``ray.init``'s level for the driver's "ray" logger: errors only, unless ``verbose``."""
    return logging.INFO if verbose else logging.ERROR


def filter_forwarded_output(verbose: bool) -> None:
    """After ``ray.init``: forwarded worker output passes through :func:`kept` (unless ``verbose``)."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    if verbose:
        return
    ray_handlers = [handler for name, handler in dispatcher.handlers if name == HANDLER]
    if not ray_handlers:  # log_to_driver off, or Ray renamed it: nothing to filter
        return
    dispatcher.remove_handler(HANDLER)
    dispatcher.add_handler(HANDLER, _filtering(ray_handlers[0]))


def _filtering(print_batch: Callable[[dict], None]) -> Callable[[dict], None]:
    def handle(data: dict) -> None:
        batch = kept(data)
        if batch is not None:
            print_batch(batch)

    return handle
