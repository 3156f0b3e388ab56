"""How a run is trained, as against what: its :class:`Launch` (workers, devices, storage, name).

    python -m platform.run asl --workers 2 --storage s3://bucket/runs --name mine

Built by ``platform.run``'s options, ``rayplatform.train``'s arguments and a sweep for each trial;
``platform/train/launch.py`` assembles a run from it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from platform.errors import UserError

DEFAULT_STORAGE = "runs"
DEFAULT_MAX_FAILURES = 3


@dataclasses.dataclass(frozen=True)
class Launch:
    """How a run is trained, as against what (its Config): the same run on other workers or devices
    is the same run. Built once, by ``python -m platform.run``'s options, by ``rayplatform.train``'s
    arguments and by a sweep for each trial, and passed whole to where a run is assembled
    (``platform/train/launch.py``); the resolved values are the manifest's ``launch``."""

    workers: int = 1
    """Ray Train workers; 0: local mode, the training function in this process (no worker restarts)."""
    cpus_per_worker: float | None = None
    """CPUs each worker reserves; None: the cluster's CPUs shared among the workers. Local mode
    reserves none: it sets this process's torch threads, as a one-worker run's (the same floats)."""
    gpu: bool = False
    """One GPU a worker (CUDA, mixed precision)."""
    storage: str = DEFAULT_STORAGE
    """Where runs are written: a folder, or a URI such as s3://bucket/runs."""
    store: str | None = None
    """Where preprocessed data is kept; None: <storage>/.store for a URI storage, else the platform cache."""
    name: str | None = None
    """The run's name; None: <tier>-<time>-<suffix>."""
    resume: bool = False
    """Continue the run ``name`` from its latest checkpoint."""
    address: str | None = None
    """The Ray cluster; None: RAY_ADDRESS, or a Ray started here."""
    tracker: str | None = None
    """tensorboard, mlflow or both, comma-separated; None: tensorboard (a resume keeps the run's)."""
    max_failures: int | None = None
    """Worker failures a run recovers from; None: DEFAULT_MAX_FAILURES, none in local mode."""
    fail_at_epoch: int | None = None
    """Fault injection: a worker dies as this epoch starts (first attempt only); in local mode the run's process."""
    progress: str = "auto"
    """Bars of preprocessing and each epoch's steps: auto (in a terminal), on or off."""
    verbose: bool = False
    """Ray's own log lines too."""

    def check(self) -> Launch:
        """Itself, when every value can be launched; else a ``UserError`` naming the option."""
        if self.workers < 0:
            raise UserError("--workers must be 0 (local mode: in this process) or more")
        if self.cpus_per_worker is not None and not self.cpus_per_worker > 0:
            raise UserError("--cpus-per-worker must be positive")
        if self.max_failures is not None and self.max_failures < 0:
            raise UserError("--max-failures must be 0 or more")
        if self.is_local and self.max_failures:
            raise UserError(
                f"--max-failures {self.max_failures}: local mode (--workers 0) has no worker restarts; "
                "a crash ends the run and --resume continues it (drop --max-failures, or use --workers 1)"
            )
        return self

    @property
    def is_local(self) -> bool:
        """Local mode: Ray Train runs the training function in this process (``platform/train/local.py``)."""
        return self.workers == 0

    @property
    def world_size(self) -> int:
        """Processes that train: local mode is one, as one worker."""
        return max(1, self.workers)

    @property
    def restarts_allowed(self) -> int:
        return 0 if self.is_local else DEFAULT_MAX_FAILURES if self.max_failures is None else self.max_failures

    def store_root(self) -> str | None:
        """``store``; with an object-store ``storage`` the store sits beside the runs, where every
        node reads it; else the platform cache (None)."""
        if self.store:
            return self.store
        return f"{self.storage.rstrip('/')}/.store" if "://" in self.storage else None

    def recorded(self) -> dict[str, Any]:
        """What a resume holds a run to (its manifest's ``launch``)."""
        return {"workers": self.workers, "cpus_per_worker": self.cpus_per_worker, "gpu": self.gpu}
