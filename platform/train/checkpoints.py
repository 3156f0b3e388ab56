"""A run's Ray Train checkpoints: their names, which exist, which to load, which are orphans
(when one is taken, and which Ray Train keeps, is ``platform/train/policy.py``'s).

Used by ``python -m platform.run asl`` (a restarted worker loads the newest readable checkpoint; a
finished run drops its orphans), ``python -m platform.tune`` (a trial's latest and best) and
``python -m platform.monitor``. Ray Train records every checkpoint it keeps in the run's
``checkpoint_manager_snapshot.json``; that record, not a folder listing, says what exists: a
``epoch_*`` folder missing from it is what a killed attempt left half-written
(ray-project/ray#41700), and is never read. No Ray here: the snapshot is read as a file, from a
folder or an object store.
"""

from __future__ import annotations

import io
import json
import math
import secrets
from collections.abc import Callable
from typing import Any

import pyarrow.fs as pafs

from platform.data.store import filesystem, join

SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
STATE_FILE = "state.pt"
# Beside it in every checkpoint: the run's config.json and meta.json, and RUN_FILE (its tier,
# launch and start), so that a resume still knows the run when its own files are torn.
RUN_FILE = "run.json"
# One a worker process: two attempts that restore the same checkpoint (so have the same restart
# count) must still not write into each other's folders.
ATTEMPT = secrets.token_hex(3)


def name(epoch: int, step: int, restarts: int, inside_epoch: bool) -> str:
    """The folder of a checkpoint: ``epoch_0003-attempt_1-<token>``, ``epoch_0003-step_0000042-...``
    inside epoch 4. Sorted by name, one inside an epoch comes after the end of the epoch before it."""
    inside = f"-step_{step:07d}" if inside_epoch else ""
    return f"epoch_{epoch:04d}{inside}-attempt_{restarts}-{ATTEMPT}"


def read_snapshot(run_uri: str) -> dict | None:
    """Ray Train's record of the run at ``run_uri`` (a folder or a URI); None before the first."""
    fs, path = filesystem(run_uri)
    try:
        with fs.open_input_stream(join(path, SNAPSHOT_FILE)) as stream:
            return json.loads(stream.read().decode("utf-8"))
    except (OSError, ValueError):
        return None


def recorded(snapshot: dict | None) -> list[dict]:
    """The kept checkpoints, newest first: each one's metrics and ``dir`` (its folder name). A
    checkpoint inside an epoch (``partial``) is newer than the end of the epoch before it."""
    rows = [{**r["metrics"], "dir": r["checkpoint_dir_name"]} for r in (snapshot or {}).get("checkpoint_results", [])]
    return sorted(rows, key=lambda row: (row.get("epoch", 0), row.get("position", 0)), reverse=True)


def _scored(metrics: dict, metric: str) -> bool:
    """A real score: not NaN, nor the worst one a checkpoint inside an epoch reports (``platform/train/policy.py``)."""
    value = metrics.get(metric)
    return not metrics.get("partial") and isinstance(value, (int, float)) and not math.isnan(value)


def best(snapshot: dict | None, metric: str, mode: str) -> dict | None:
    """The kept end-of-epoch checkpoint with the best ``metric`` (never a NaN); a later one wins a tie."""
    scored = [row for row in recorded(snapshot) if _scored(row, metric)]
    if not scored:
        return None
    return (max if mode == "max" else min)(reversed(scored), key=lambda row: row[metric])


def best_of_result(result: Any, metric: str, mode: str) -> Any:
    """The best checkpoint of a finished Ray Train ``Result``. Not ``get_best_checkpoint``: it takes
    ``max`` over the scores, where a NaN in first place beats every number."""
    scored = [
        (checkpoint, metrics[metric]) for checkpoint, metrics in getattr(result, "best_checkpoints", None) or [] if _scored(metrics, metric)
    ]
    if not scored:
        return result.get_best_checkpoint(metric=metric, mode=mode) or result.checkpoint
    return (max if mode == "max" else min)(scored, key=lambda pair: pair[1])[0]


def read_state(run_uri: str, folder: str) -> dict:
    """The training state in checkpoint ``folder`` of the run (``weights_only``: no pickles run)."""
    import torch  # here, not at the top: the monitor reads snapshots and must not wait for torch

    fs, path = filesystem(run_uri)
    with fs.open_input_stream(join(path, folder, STATE_FILE)) as stream:
        return torch.load(io.BytesIO(stream.read()), map_location="cpu", weights_only=True)


def load_newest(run_uri: str, first: str | None = None, warn: Callable[[str], None] | None = None) -> tuple[str, dict] | None:
    """The newest checkpoint that reads whole, from ``first`` (the one Ray Train picked) back through
    the older recorded ones: a torn or truncated file (a full disk, a node lost mid-write) costs the
    steps since the one before it, not the run. ``warn`` is told of each one passed over."""
    rows = recorded(read_snapshot(run_uri))
    names = [row["dir"] for row in rows]
    if first is not None:
        older = names[names.index(first) + 1 :] if first in names else names
        names = [first, *older]
    for folder in names:
        try:
            return folder, read_state(run_uri, folder)
        except Exception as err:  # noqa: BLE001 - torch and zip raise many kinds for one torn file
            if warn is not None:
                warn(
                    f"warning: checkpoint {folder} is unreadable ({type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else 'no detail'}); trying the one before it"
                )
    return None


def folders(run_uri: str) -> list[str]:
    """Every ``epoch_*`` folder of the run, recorded or not."""
    fs, path = filesystem(run_uri)
    try:
        found = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError:
        return []
    return sorted(info.base_name for info in found if info.type == pafs.FileType.Directory and info.base_name.startswith("epoch_"))


def remove_orphans(run_uri: str) -> list[str]:
    """Delete the ``epoch_*`` folders the snapshot does not record; their names. Only when no
    attempt of the run is running: a checkpoint being written is not recorded yet."""
    snapshot = read_snapshot(run_uri)
    if snapshot is None:
        return []
    kept = {row["dir"] for row in recorded(snapshot)}
    return remove(run_uri, [folder for folder in folders(run_uri) if folder not in kept])


def remove(run_uri: str, names: list[str]) -> list[str]:
    """Delete the run's checkpoint folders ``names`` (those already gone too); their names."""
    fs, path = filesystem(run_uri)
    for folder in names:
        try:
            fs.delete_dir(join(path, folder))
        except FileNotFoundError:
            pass
    return names


def state_of_result(checkpoint: Any) -> dict:
    """The training state of a checkpoint Ray Train returned in a ``Result``."""
    import torch

    with checkpoint.as_directory() as directory:
        return torch.load(f"{directory}/{STATE_FILE}", map_location="cpu", weights_only=True)
