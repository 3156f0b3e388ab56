"""A run opened before anything runs: a new run's folder claimed, or a run to ``--resume`` read back;
its tier and config resolved; its launch held to what it started with; this machine's lock on it.

Used by ``python -m platform.run asl [--name N --resume]`` and ``rayplatform.train``, before Ray
starts: no torch, no Ray here.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from platform import registry
from platform.data import locations
from platform.errors import UserError
from platform.launching import Launch
from platform.runs import resume, run_files
from platform.runs import storage as storage_lib
from platform.runs.storage import RunLocation
from platform.train import checkpoints


@dataclasses.dataclass(frozen=True)
class Request:
    """What to train: the trainable and its config's layers (tier, ``--config`` file, ``--data``, ``--set``)."""

    stem: str
    tier: str | None = None
    sets: tuple[str, ...] = ()
    data: str = ""
    config_file: str | None = None


@dataclasses.dataclass(frozen=True)
class Opened:
    """A run ready to train: where it lives, its tier and config, its launch (pinned on a resume)
    and this machine's lock on it, held until :meth:`close`."""

    location: RunLocation
    tier: str
    cfg: Any
    launch: Launch
    held: int | None

    def close(self) -> None:
        """Let go of the run; a new one that never started (wrote no config) gives back its name."""
        if not self.launch.resume:
            self.location.release()
        run_files.let_go(self.held)


def open_run(request: Request, launch: Launch) -> Opened:
    """The run ``request`` and ``launch`` name: a new one claimed, or the one to resume."""
    config_cls, _space = registry.load_config(request.stem)
    if not launch.resume:
        tier, cfg = new_config(request, launch.storage)
        location, held = claim_new_run(launch, request.stem, tier)
        return Opened(location, tier, cfg, launch, held)
    if not launch.name:
        raise UserError("--resume needs the --name of the run to continue")
    if request.tier or request.sets or request.data or request.config_file:
        raise UserError("a resumed run keeps its config: drop --tier, --config, --set and --data")
    location = storage_lib.locate(launch.storage, request.stem, launch.name)
    held = run_files.hold(location.key)
    if held is None:
        raise UserError(
            f"run {location.remote or location.local} is being trained by another process on this machine: wait for it or stop it"
        )
    try:
        if not (
            location.exists(run_files.CONFIG_FILE)
            or location.exists(run_files.MANIFEST_FILE)
            or checkpoints.read_snapshot(location.run_uri)
        ):
            raise UserError(f"nothing to resume at {location.remote or location.local}{_never_started(location)}")
        location.pull()
        resumed = resume.recover(location, config_cls, warn=lambda line: print(line, file=sys.stderr, flush=True))
        _check_same_trainable(resumed.manifest, request.stem, location)
        launch = pin_launch(launch, resumed.manifest.get("launch"))
    except BaseException:
        run_files.let_go(held)
        raise
    return Opened(location, resumed.tier, resumed.cfg, launch, held)


def _check_same_trainable(manifest: dict, stem: str, location: RunLocation) -> None:
    """A run resumes with the trainable it trained: another folder of the same name (its model, its
    data, its loss) would continue its checkpoints silently."""
    recorded, found = manifest.get("trainable"), registry.find(stem).reference
    if recorded and recorded != found and Path(recorded).is_dir():
        raise UserError(
            f"run {location.remote or location.local} trained the trainable {recorded}, not {found}: "
            f"resume it with that one (rayplatform run {recorded} --resume ...)"
        )


def new_config(request: Request, storage: str) -> tuple[str, Any]:
    """A new run's tier and config: defaults, tier, ``--config``, ``--data``, ``--set``; checked."""
    tier = request.tier or registry.DEFAULT_TIER
    storage_lib.refuse_credentials(storage, "--storage")  # before anything, a preset's --print-config too
    _config, space = registry.load_config(request.stem)
    # A preset needs no saved tier: a storage URI's tiers are fetched for a tier that may be one.
    preset = tier in space.TIERS or tier in space.ALIASES
    tiers_root = None if preset else storage_lib.tiers_root(storage, request.stem)  # the tiers sweeps saved there
    cfg = registry.resolve(
        request.stem, tier, list(request.sets), data_dir=request.data, storage=tiers_root, config_file=request.config_file
    )
    if cfg.data_dir:
        locations.check_data_folder(cfg.data_dir)
    return tier, cfg


def claim_new_run(launch: Launch, stem: str, tier: str) -> tuple[RunLocation, int]:
    """A new run's folder, claimed before anything is written, and this machine's lock on it:
    ``name``, or a default name of its tier, the time and a random suffix (two runs started in the
    same second differ)."""
    for _attempt in range(1 if launch.name else 5):
        location = storage_lib.locate(launch.storage, stem, launch.name or run_files.default_name(tier))
        held = run_files.hold(location.key)
        if held is not None:
            if location.claim():
                return location, held
            run_files.let_go(held)
    raise UserError(_taken(location, held is None))


def _taken(location: RunLocation, held_here: bool) -> str:
    """Why a new run cannot have the name, and what to do."""
    shown = location.remote or location.local
    if held_here or location.exists(run_files.CONFIG_FILE) or any(p.name != run_files.CLAIM_FILE for p in _entries(location)):
        return f"run {shown} already exists: pass --resume to continue it, or another --name"
    claim = location.claimed_by()
    return (
        f"run {shown} is being started by another command (pid {claim.get('pid')} on {claim.get('host')} since "
        f"{claim.get('claimed')}): pass another --name, or, if that command is gone, delete its {run_files.CLAIM_FILE}"
    )


def _entries(location: RunLocation) -> list[Path]:
    return list(location.local.iterdir()) if location.remote is None and location.local.is_dir() else []


def _never_started(location: RunLocation) -> str:
    claim = location.claimed_by()
    if not claim:
        return ""
    return (
        f" (a command claimed it at {claim.get('claimed')} and was gone before it wrote the run's config: start it again under that --name)"
    )


def pin_launch(launch: Launch, recorded: dict | None) -> Launch:
    """``launch`` held to the devices and thread count the run started with, since both change the
    floats (a run is bitwise only on the same ones); on another ``--workers`` the exactness is the
    sample order's (each remaining sample once), so the CPUs a worker may change with it."""
    if recorded is None:  # a run from before launches were recorded
        return launch
    if launch.gpu != recorded["gpu"]:
        raise UserError(
            f"this run trained {'with' if recorded['gpu'] else 'without'} --gpu: a resume keeps it "
            f"({'add' if recorded['gpu'] else 'drop'} --gpu)"
        )
    if launch.workers != recorded["workers"]:
        return launch
    if launch.cpus_per_worker is None:
        return dataclasses.replace(launch, cpus_per_worker=recorded["cpus_per_worker"])
    if launch.cpus_per_worker != recorded["cpus_per_worker"]:
        raise UserError(
            f"this run trained with --cpus-per-worker {recorded['cpus_per_worker']:g}: a resume on "
            f"{launch.workers} worker(s) keeps it (torch's thread count changes the results)"
        )
    return launch
