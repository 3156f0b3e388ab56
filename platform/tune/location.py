"""Where a sweep lives: ``<storage>/<stem>/sweeps/<name>/``, in a folder or in an object store.

    python -m platform.tune asl --storage /shared/runs
    python -m platform.tune asl --storage s3://bucket/runs      # also gs://, hdfs://...

In a folder, the sweep's folder holds everything: its own files, Ray Tune's experiment state and
each trial's run (``trials/<id>/``). On a URI, Ray Tune keeps its experiment state at the URI,
each trial is a run there (``trials/<id>/``, uploaded by the trial's own process as
``platform.run``'s runs are: ``platform/runs/storage.py``), and the sweep's own files (``OWN_FILES``)
are written to this machine's mirror and uploaded when the sweep starts, after each finished trial
and at its end; ``--resume`` downloads them again, on any machine.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

from platform.runs import storage as storage_lib
from platform.runs.storage import RunLocation
from platform.tracking.trackers import SWEEP_FILE as TRACKING_FILE

SETTINGS_FILE = "sweep.json"
RESULTS_FILE = "results.csv"
ASHA_FILE = "asha_stopped.json"
BEST_FILE = "best.json"
PLOT_FILE = "pareto.png"
OWN_FILES = (SETTINGS_FILE, RESULTS_FILE, ASHA_FILE, BEST_FILE, PLOT_FILE, TRACKING_FILE)
TRIALS_DIR = "trials"


@dataclasses.dataclass(frozen=True)
class SweepLocation(RunLocation):
    """A sweep's folder as a run's is one (claimed, pulled, pushed), with the sweep's own files,
    and the runs of its trials below it."""

    storage: str = ""
    """``--storage`` as given (resolved when a folder)."""
    MARKER: ClassVar[str] = SETTINGS_FILE

    def owns(self, name: str) -> bool:
        return name in OWN_FILES

    def trial(self, trial_id: str) -> RunLocation:
        """A trial's run; on a URI its mirror is the calling machine's (a trial runs on any node)."""
        if self.remote is None:
            return RunLocation(self.local / TRIALS_DIR / trial_id)
        remote = f"{self.remote}/{TRIALS_DIR}/{trial_id}"
        return RunLocation(storage_lib.mirror_root(self.storage) / remote.removeprefix(self.storage.rstrip("/") + "/"), remote)

    @property
    def shown(self) -> str:
        """Where a user finds the sweep."""
        return self.remote or str(self.local)

    def __reduce__(self):
        # Unpickled elsewhere (a resumed sweep's Tune state on another machine, a trial's node), a
        # sweep on a URI has the mirror of the machine it is unpickled on, not of the one that pickled it.
        return (_relocated, (self.local if self.remote is None else None, self.remote, self.storage))


def _relocated(local: Path | None, remote: str | None, storage: str) -> SweepLocation:
    if remote is None:
        return SweepLocation(local, None, storage=storage)
    return SweepLocation(storage_lib.mirror_root(storage) / remote.removeprefix(storage.rstrip("/") + "/"), remote, storage=storage)


def locate(storage: str, stem: str, name: str) -> SweepLocation:
    """The sweep ``name`` of ``stem`` in ``storage`` (a folder, or a URI whose bucket must exist)."""
    run = storage_lib.locate(storage, stem, f"sweeps/{name}")
    kept = storage if storage_lib.is_uri(storage) else str(Path(storage).expanduser().resolve())
    return _relocated(run.local, run.remote, kept)
