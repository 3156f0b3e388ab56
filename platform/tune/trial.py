"""One trial of ``python -m platform.tune asl``: the same run as ``python -m platform.run``.

Tune runs :func:`run_trial` as a plain function trainable (Ray 2.60: ``Tuner(trainer)`` is gone)
that assembles and trains the run as ``platform.run`` does (``platform/train/launch.py``), so a
trial's run directory holds what a run's does; a ``TuneReportCallback`` forwards each epoch's
metrics to Tune. The Train run is named by the trial
id under ``<sweep>/trials/``, so a retried or resumed trial continues from its own checkpoints.

Data: the driver writes the store of each tier's data before the trials start
(:func:`prepare_shared`); each trial then prepares its own config's data, which is a look-up of
the store when the data is the same (``platform/data/ingest.py`` keys it by content) and a new store
when its sampled values change the rows or the preprocessing.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ray.tune
from ray.train.v2._internal.constants import ENV_VARS_TO_PROPAGATE
from ray.tune.integration.ray_train import TuneReportCallback

from platform import cluster, registry
from platform import config as config_lib
from platform.contract import Trainable
from platform.data import ingest
from platform.launching import Launch
from platform.runs import artifacts
from platform.runs import storage as storage_lib
from platform.tracking import ray_views, trackers
from platform.train import checkpoints
from platform.tune.location import TRACKING_FILE, SweepLocation
from platform.tune.space import TIER_DEFAULT

TRIAL_DRIVER_CPU = 0.01  # the trial function only waits on its Train run, whose workers hold the CPUs
DONE_FILE = "trial_done.json"
# A trial whose workers cannot be placed (CPUs still held by a stopped trial) fails after this
# instead of hanging the sweep; Tune then retries it (``FailureConfig(max_failures=1)``).
WORKER_START_TIMEOUT_S = "120"


def prepare_shared(trainable: Trainable, tier_configs: dict[str, Any], store: str | None, say=print) -> None:
    """The store of every tier's data (in ``store``, the trials' ``Launch.store_root()``), written
    once before concurrent trials would race for it."""
    for tier, cfg in tier_configs.items():
        say(f"[{trainable.stem}] preparing data for tier {tier} ({cfg.data_dir or 'synthetic set'})")
        _splits, meta = ingest.prepare(trainable, cfg, store, say=say)
        say(f"[{trainable.stem}] rows: {meta['rows']}  in {meta['preprocess_s']}s")


def propagated_env() -> dict[str, str]:
    """Ray Train settings of the driver's environment (health checks, start-up timeout): a trial
    actor on an existing cluster does not inherit them, and Train forwards only its caller's."""
    env = {name: os.environ[name] for name in (*ENV_VARS_TO_PROPAGATE, *ray_views.TRAIN_VIEWS_ENV) if name in os.environ}
    env.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", WORKER_START_TIMEOUT_S)
    return env


class SweepReportCallback(TuneReportCallback):
    """Forwards each epoch to Tune, adding what a Pareto sweep compares a trial by.

    ``train_s`` sums the epochs' ``epoch_s`` (a replayed epoch counts once, as its last attempt),
    ``params`` is the model's parameter count, ``epochs_max`` tells a finished trial from a stopped one.
    """

    def __init__(self, params: int, epochs_max: int, epoch_seconds: dict[int, float]):
        super().__init__()
        self._static = {"params": params, "epochs_max": epochs_max}
        self._epoch_seconds = dict(epoch_seconds)

    def after_report(self, run_context, metrics, checkpoint):
        first = metrics[0]
        if first.get("partial"):  # a checkpoint inside an epoch: not a result for Tune's schedulers
            return
        self._epoch_seconds[int(first["epoch"])] = float(first.get("epoch_s", 0.0))
        extra = {**self._static, "train_s": round(sum(self._epoch_seconds.values()), 3)}
        super().after_report(run_context, [{**first, **extra}, *metrics[1:]], checkpoint)


def run_trial(
    params: dict,
    *,
    stem: str,
    tiers: list[str],
    sets: list[str],
    data_dir: str,
    storage: str,
    sweep: SweepLocation,
    launch: Launch,
    env: dict,
    config_values: dict | None = None,
) -> None:
    """The Tune trainable: a run of the trial's config, assembled as ``platform.run`` assembles one
    (``platform/train/launch.py``) on the sweep's launch (workers, CPUs, GPUs a trial), then marked
    done. It runs in its own Ray process, so it is given the stem and loads the trainable itself."""
    os.environ.update(env)  # before fit(): Train passes them on to its controller and workers
    from platform.train import launch as assembly

    trainable = registry.load(stem)
    trial_id = ray.tune.get_context().get_trial_id()
    location = sweep.trial(trial_id)
    resumed = location.exists(artifacts.MANIFEST_FILE)  # Tune retried it, or the sweep was resumed
    if resumed:  # its config as it was saved, its data and min_steps applied
        location.pull()
        cfg = config_lib.from_dict(trainable.Config, artifacts.read_json(location.local / artifacts.CONFIG_FILE))
        tier = artifacts.read_json(location.local / artifacts.MANIFEST_FILE)["tier"]
    else:
        values = config_values or {}
        cfg, tier = trial_config(stem, params, tiers=tiers, sets=sets, data_dir=data_dir, storage=storage, config_values=values)
    extras = assembly.Extras(
        manifest={"command": f"python -m platform.tune {stem}", "sweep": {"dir": sweep.shown, "params": params}},
        callbacks=lambda cfg, meta: [SweepReportCallback(_parameters(trainable, cfg, meta), cfg.epochs, trained_seconds(location.run_uri))],
        epoch_lines=False,  # the sweep's table shows them
    )
    assembly.train(
        trainable,
        cfg,
        tier,
        dataclasses.replace(launch, resume=resumed),
        location,
        tracked=trackers.for_trial(sweep.read_json(TRACKING_FILE) or {}, trial_id),
        dashboard=cluster.start(),
        extras=extras,
        say=lambda _line: None,  # the sweep's lines and table speak for its trials
    )
    location.write_json(DONE_FILE, {"finished": artifacts.now()})


def _parameters(trainable: Trainable, cfg: Any, meta: dict) -> int:
    return sum(p.numel() for p in trainable.build_model(cfg, meta).parameters())


def trial_config(
    stem: str, params: dict, *, tiers: list[str], sets: list[str], data_dir: str, storage: str, config_values: dict
) -> tuple[Any, str]:
    """A trial's config and tier: defaults, its tier, the sweep's ``--config`` values, its sampled
    values, ``--data`` and ``--set``. A tier's own configuration has no sampled values: it trains
    the tier exactly (the values Optuna recorded for it are the tier's)."""
    tier = params.get("tier", tiers[0])
    sampled = {} if params.get(TIER_DEFAULT) else {k: v for k, v in params.items() if k not in ("tier", TIER_DEFAULT)}
    # --config comes before the trial: its values are the trial layer's base, overridden by the sample.
    return registry.resolve(
        stem, tier, sets, trial={**config_values, **sampled}, data_dir=data_dir, storage=storage_lib.tiers_root(storage, stem)
    ), tier


# ---------------------------------------------------------------- a trial's checkpoints


def latest_state(run_uri: str) -> tuple[str, dict] | None:
    """A trial's newest recorded checkpoint that reads whole (its path or URI), and its training state."""
    found = checkpoints.load_newest(run_uri)
    return (f"{run_uri.rstrip('/')}/{found[0]}", found[1]) if found else None


def trained_seconds(run_uri: str) -> dict[int, float]:
    """Epoch -> seconds of the epochs a resumed trial already trained (its latest checkpoint)."""
    found = latest_state(run_uri)
    history = found[1].get("history", []) if found else []
    return {int(row["epoch"]): float(row.get("epoch_s", 0.0)) for row in history}
