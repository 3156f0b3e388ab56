"""One trial of ``python -m platform.tune asl``: the same Ray Train run as ``python -m platform.run``.

Tune runs :func:`run_trial` as a plain function trainable (Ray 2.60: ``Tuner(trainer)`` is gone)
that builds the run's ``TorchTrainer`` with ``platform.trainer.build`` and fits it; a
``TuneReportCallback`` forwards each epoch's metrics to Tune. The Train run is named by the trial
id under ``<sweep>/trials/``, so a retried or resumed trial continues from its own checkpoints.

Data: the driver writes the store of each tier's data before the trials start
(:func:`prepare_shared`); each trial then prepares its own config's data, which is a look-up of
the store when the data is the same (``platform/data.py`` keys it by content) and a new store
when its sampled values change the rows or the preprocessing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray.tune
from ray.train.v2._internal.constants import ENV_VARS_TO_PROPAGATE
from ray.tune.integration.ray_train import TuneReportCallback

from platform import artifacts, checkpoints, cluster, data, registry, tracking
from platform import config as config_lib
from platform import trainer as trainer_lib
from platform.contract import Trainable
from platform.tune.space import TIER_DEFAULT

TRIALS_DIR = "trials"
TRIAL_DRIVER_CPU = 0.01  # the trial function only waits on its Train run, whose workers hold the CPUs
DONE_FILE = "trial_done.json"
# A trial whose workers cannot be placed (CPUs still held by a stopped trial) fails after this
# instead of hanging the sweep; Tune then retries it (``FailureConfig(max_failures=1)``).
WORKER_START_TIMEOUT_S = "120"


def prepare_shared(trainable: Trainable, tier_configs: dict[str, Any], say=print) -> None:
    """The store of every tier's data, written once before concurrent trials would race for it."""
    for tier, cfg in tier_configs.items():
        say(f"[{trainable.stem}] preparing data for tier {tier} ({cfg.data_dir or 'synthetic set'})")
        _splits, meta = data.prepare(trainable, cfg, say=say)
        say(f"[{trainable.stem}] rows: {meta['rows']}  in {meta['preprocess_s']}s")


def propagated_env() -> dict[str, str]:
    """Ray Train settings of the driver's environment (health checks, start-up timeout): a trial
    actor on an existing cluster does not inherit them, and Train forwards only its caller's."""
    env = {name: os.environ[name] for name in ENV_VARS_TO_PROPAGATE if name in os.environ}
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
    sweep_dir: str,
    cpus_per_worker: float,
    max_failures: int,
    env: dict,
    config_values: dict | None = None,
) -> None:
    """The Tune trainable: resolve the trial's config, train it on Ray Train, mark it done. It runs in
    its own Ray process, so it is given the stem and loads the trainable itself."""
    os.environ.update(env)  # before fit(): Train passes them on to its controller and workers
    trainable = registry.load(stem)
    cfg, tier = trial_config(stem, params, tiers=tiers, sets=sets, data_dir=data_dir, storage=storage, config_values=config_values or {})
    splits, meta = data.prepare(trainable, cfg)
    cfg, _grown = config_lib.fit_to_data(cfg, meta["rows"]["train"], workers=1)  # as platform.run does

    run_dir = Path(sweep_dir) / TRIALS_DIR / ray.tune.get_context().get_trial_id()
    resumed = (run_dir / artifacts.MANIFEST_FILE).exists()
    manifest = artifacts.start(
        run_dir, trainable, tier=tier, cfg=cfg, meta=meta, hardware=cluster.hardware(), resumed=resumed, dashboard=cluster.start()
    )
    artifacts.write_json(
        run_dir / artifacts.MANIFEST_FILE,
        {**manifest, "command": f"python -m platform.tune {stem}", "sweep": {"dir": sweep_dir, "params": params}},
    )
    trackers, parent_id = tracking.for_trial(Path(sweep_dir))  # a child of the sweep's MLflow run
    trackers.open(
        run_dir / artifacts.MANIFEST_FILE,
        manifest,
        run_dir.name,
        tracking.run_params(stem, tier, manifest["config"]),
        {**tracking.run_tags(stem, tier, run_dir.name, run_dir), "trial_id": run_dir.name},
        parent_id,
    )
    trainer = trainer_lib.build(
        trainable,
        cfg,
        meta,
        splits,
        run_dir,
        workers=1,
        cpus_per_worker=cpus_per_worker,
        max_failures=max_failures,
        epoch_lines=False,  # the sweep's table shows them
        callbacks=trackers.callbacks(run_dir),
    )
    params_count = sum(p.numel() for p in trainable.build_model(cfg, meta).parameters())
    # RunConfig.callbacks is read when fit() starts the controller, so it can be extended here.
    trainer.run_config.callbacks.append(SweepReportCallback(params_count, cfg.epochs, trained_seconds(run_dir)))
    trainer.fit()
    if trackers.mlflow:  # epochs its callback missed come from the trial's latest checkpoint
        found = latest_state(run_dir)
        trackers.finish(run_dir, found[1]["history"] if found else [], files=tracking.TRIAL_FILES)
    artifacts.write_json(run_dir / DONE_FILE, {"finished": artifacts.now()})


def trial_config(
    stem: str, params: dict, *, tiers: list[str], sets: list[str], data_dir: str, storage: str, config_values: dict
) -> tuple[Any, str]:
    """A trial's config and tier: defaults, its tier, the sweep's ``--config`` values, its sampled
    values, ``--data`` and ``--set``. A tier's own configuration has no sampled values: it trains
    the tier exactly (the values Optuna recorded for it are the tier's)."""
    tier = params.get("tier", tiers[0])
    sampled = {} if params.get(TIER_DEFAULT) else {k: v for k, v in params.items() if k not in ("tier", TIER_DEFAULT)}
    # --config comes before the trial: its values are the trial layer's base, overridden by the sample.
    return registry.resolve(stem, tier, sets, trial={**config_values, **sampled}, data_dir=data_dir, storage=Path(storage)), tier


# ---------------------------------------------------------------- a trial's checkpoints


def latest_state(run_dir: Path) -> tuple[Path, dict] | None:
    """A trial's newest recorded checkpoint that reads whole, and its training state."""
    found = checkpoints.load_newest(str(run_dir))
    return (run_dir / found[0], found[1]) if found else None


def trained_seconds(run_dir: Path) -> dict[int, float]:
    """Epoch -> seconds of the epochs a resumed trial already trained (its latest checkpoint)."""
    found = latest_state(run_dir)
    history = found[1].get("history", []) if found else []
    return {int(row["epoch"]): float(row.get("epoch_s", 0.0)) for row in history}
