"""What a finished sweep leaves: ``pareto.png``, ``best.json``, the best trial as a run directory, and
the best configuration as a saved tier.

Written at the end of ``python -m platform.tune asl --save-tier tuned`` into
``<storage>/asl/sweeps/<name>/`` and ``<storage>/asl/tiers/tuned.json``, which
``python -m platform.run asl --tier tuned --storage <storage>`` then trains with (the file it
replaces is kept as ``<storage>/asl/tiers/replaced/tuned-<YYYYmmdd-HHMMSS>.json``).
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import itertools
import secrets
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # sweeps have no display; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import ray.train

from platform import config as config_lib
from platform import registry
from platform.contract import Trainable
from platform.runs import artifacts, durable
from platform.runs import storage as storage_lib
from platform.runs.storage import RunLocation
from platform.train import checkpoints
from platform.tune.location import BEST_FILE, SweepLocation
from platform.tune.results import ASHA, COMPLETED, ERROR
from platform.tune.space import TIER_DEFAULT, Objective
from platform.tune.trial import latest_state

REPLACED_DIR = "replaced"  # in <storage>/<stem>/tiers/: the tier files a later sweep replaced
STATUS_STYLE = {COMPLETED: ("tab:blue", "o"), ASHA: ("tab:orange", "v"), ERROR: ("tab:gray", "x")}


def plot(frame: pd.DataFrame, objectives: list[Objective], front: np.ndarray, best: int | None, path: Path, title: str) -> None:
    """Quality against the second objective (``train_s`` for a single objective), every trial by
    status, the front as a highlighted staircase and the chosen trial circled."""
    y_obj = objectives[0]
    x_obj = objectives[1] if len(objectives) > 1 else Objective("train_s", "min")
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    values = {o.metric: pd.to_numeric(frame.get(o.metric), errors="coerce") for o in (x_obj, y_obj)} if len(frame) else {}
    for status, group in frame.groupby("status") if len(frame) else []:
        color, marker = STATUS_STYLE.get(status, ("tab:purple", "s"))
        axis.scatter(
            values[x_obj.metric][group.index],
            values[y_obj.metric][group.index],
            c=color,
            marker=marker,
            alpha=0.6,
            label=f"{status} ({len(group)})",
        )
    if front.any():
        points = sorted(zip(values[x_obj.metric][front], values[y_obj.metric][front]))
        label = "Pareto front" if len(objectives) > 1 else None
        axis.step(*zip(*points), where="post", color="tab:red", alpha=0.6)
        axis.scatter(*zip(*points), s=90, facecolors="none", edgecolors="tab:red", linewidths=2, label=label)
    if best is not None:
        axis.scatter(
            [values[x_obj.metric][best]],
            [values[y_obj.metric][best]],
            marker="*",
            s=260,
            c="gold",
            edgecolors="black",
            zorder=5,
            label="best (saved tier)",
        )
    axis.set_xlabel(f"{x_obj.metric} ({x_obj.mode})")
    axis.set_ylabel(f"{y_obj.metric} ({y_obj.mode})")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


class _FinishedTrial:
    """What ``artifacts.finish`` reads from a Ray Train ``Result``, rebuilt from a trial's directory
    (the Train run ended inside the trial actor; its Result did not come back)."""

    def __init__(self, latest: str, best: str):
        self.checkpoint = ray.train.Checkpoint(latest)  # a folder or a URI
        self._best = ray.train.Checkpoint(best)

    def get_best_checkpoint(self, metric: str, mode: str):
        return self._best


def export_best(trainable: Trainable, run: RunLocation, val_split: Any) -> dict | None:
    """Make the best trial a finished run directory (history, plots, ``best_model.pt``, manifest),
    as ``python -m platform.run`` would, so ``python -m platform.predict <run_dir>`` works. ``run``
    is pulled: its files are in ``run.local``; it is pushed after."""
    found = latest_state(run.run_uri)
    if found is None:
        return None
    latest, _state = found
    best = checkpoints.best(checkpoints.read_snapshot(run.run_uri), *trainable.METRIC)
    run_dir = run.local
    cfg = config_lib.from_dict(trainable.Config, artifacts.read_json(run_dir / artifacts.CONFIG_FILE))
    meta = artifacts.read_json(run_dir / artifacts.META_FILE)
    manifest = artifacts.read_json(run_dir / artifacts.MANIFEST_FILE)
    finished = _FinishedTrial(latest, f"{run.run_uri}/{best['dir']}" if best else latest)
    manifest = artifacts.finish(run_dir, trainable, cfg=cfg, meta=meta, result=finished, val_split=val_split, manifest=manifest)
    run.push()
    return manifest


def save_tier(
    storage: str,
    trainable: Trainable,
    *,
    name: str,
    row: pd.Series,
    config: dict,
    sets: list[str],
    sweep: SweepLocation,
    config_keys: tuple[str, ...] = (),
) -> str:
    """The best trial's exact configuration as a tier: its preset base tier plus the keys its saved
    tier (if it ran one) set, the sweep's ``--config`` keys, the sampled values and the ``--set``
    overrides, each with the trial's value (``--data`` stays a per-run choice). A saved tier is
    always based on a preset, so a sweep over ``tuned`` saving ``tuned`` cannot make it its own base;
    the file it replaces is kept in ``tiers/replaced/``. ``config``: the trial's ``config.json``.
    Returns where the tier was saved (a path, or a URI)."""
    cfg = config_lib.to_dict(config_lib.from_dict(trainable.Config, config))
    root = storage_lib.tiers_root(storage, trainable.stem)  # on a URI: the bucket's tiers, downloaded now
    base, inherited = registry.saved_tier_base(trainable.space, row["tier"], root)
    keys = [*inherited, *config_keys]
    keys += [c.split("/", 1)[1] for c in row.index if c.startswith("config/") and pd.notna(row[c])]
    keys += list(config_lib.parse_sets(sets))
    path = registry.saved_tier_path(root, trainable.stem, name)
    tier = {
        "base": base,
        "overrides": {key: cfg[key] for key in dict.fromkeys(keys) if key != "data_dir"},
        "source": {"sweep": sweep.shown, "trial": row["trial_id"], "created": artifacts.now()},
        "metrics": {k: row[k] for k in row.index if k.startswith(("val/", "train/")) and pd.notna(row[k])},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # Two sweeps of this machine saving one tier at once: each keeps the file it replaces, as
    # ``storage`` holds it at that moment; none is lost between them (across machines on an object
    # store, see the README).
    with open(storage_lib.tier_lock(storage, path), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        previous = storage_lib.current_tier(storage, root, path)
        if previous is not None:
            replaced = _free_replaced_path(path, unique=storage_lib.is_uri(storage))
            durable.write_bytes(replaced, previous)
            storage_lib.upload_tier(storage, root, replaced)
        artifacts.write_json(path, tier)
        return storage_lib.upload_tier(storage, root, path)


def _free_replaced_path(path: Path, unique: bool = False) -> Path:
    """``tiers/replaced/<tier>-<YYYYmmdd-HHMMSS>.json``, numbered after the first of a second: outside
    ``tiers/`` itself, so the copies are not tiers (``--help`` lists each tier once). ``unique``: with
    a random suffix, for an object store, where the copies of other commands are not in this folder."""
    stamp = f"{path.stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}" + (f"-{secrets.token_hex(3)}" if unique else "")
    candidates = (path.parent / REPLACED_DIR / f"{stamp}{f'-{n}' if n else ''}.json" for n in itertools.count())
    return next(candidate for candidate in candidates if not candidate.exists())


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether the best trial may be saved as a tier, and the line that says why."""

    save: bool
    line: str
    reference: float | None = None  # the objective of the best trial's tier's own configuration


def judge(frame: pd.DataFrame, best: int, objective: Objective) -> Verdict:
    """A sweep never makes things worse: the best trial is saved only when it beats, strictly on the
    first objective and in its direction, its own tier's configuration trained in the same sweep.

    With ``--pareto`` the best trial is the best on the first objective (ties broken by the next),
    which is on the front; "better" is therefore better on the first objective. A tier whose own
    configuration did not complete (an error, the time budget) gives nothing to compare with, so
    nothing is saved.
    """
    row, metric = frame.loc[best], objective.metric
    tier = row["tier"]
    own = frame[(frame["tier"] == tier) & frame[TIER_DEFAULT].astype(bool)]
    done = pd.to_numeric(own.loc[own["status"] == COMPLETED, metric], errors="coerce").dropna()
    if done.empty:
        how = own["status"].iloc[0] if len(own) else "not run"
        return Verdict(False, f"the {tier} tier's own config did not complete ({how}), so no trial can be shown to beat it")
    reference = float(done.max() if objective.mode == "max" else done.min())
    value = float(row[metric])
    better = value > reference if objective.mode == "max" else value < reference
    if bool(row[TIER_DEFAULT]) or row["status"] != COMPLETED or not better:
        return Verdict(False, f"no trial beat the {tier} tier's own config ({metric} {reference:.4g})", reference)
    return Verdict(
        True, f"trial {row['trial_id']} beats the {tier} tier's own config: {metric} {value:.4g} against {reference:.4g}", reference
    )


def write_best(
    sweep_dir: Path,
    row: pd.Series,
    *,
    objectives: list[Objective],
    config: dict | None,
    manifest: dict | None,
    tier_path: str | None,
    front_ids: list[str],
    verdict: Verdict | None = None,
) -> dict:
    best = {
        "trial_id": row["trial_id"],
        "status": row["status"],
        "tier": row["tier"],
        "params": {c.split("/", 1)[1]: _plain(row[c]) for c in row.index if c.startswith("config/") and pd.notna(row[c])},
        "objectives": {str(o): _plain(row.get(o.metric)) for o in objectives},
        "metrics": {k: _plain(row[k]) for k in row.index if k.startswith(("val/", "train/", "train_s", "params")) and pd.notna(row[k])},
        "run_dir": row["run_dir"],
        "config": config,
        "best_model": f"{row['run_dir']}/{artifacts.BEST_MODEL_FILE}" if manifest else None,
        "checkpoint": (manifest or {}).get("checkpoints", {}).get("best"),
        "saved_tier": str(tier_path) if tier_path else None,
        "tier_default": bool(row.get(TIER_DEFAULT, False)),
        "tier_default_objective": verdict.reference if verdict else None,
        "verdict": verdict.line if verdict else None,
        "pareto_front": front_ids,
    }
    artifacts.write_json(sweep_dir / BEST_FILE, best)
    return best


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers, NaN as null: best.json is read by other tools."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
