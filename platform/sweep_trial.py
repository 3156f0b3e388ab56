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
from platform import artifacts, checkpoints, cluster, data, registry
from platform import trainer as trainer_lib
from typing import Any

import ray.tune
from ray.train.v2._internal.constants import ENV_VARS_TO_PROPAGATE
from ray.tune.integration.ray_train import TuneReportCallback

TRIALS_DIR = "trials"
TRIAL_DRIVER_CPU = 0.01  # the trial function only waits on its Train run (DESIGN.md)
DONE_FILE = "trial_done.json"
# A trial whose workers cannot be placed (CPUs still held by a stopped trial) fails after this
# instead of hanging the sweep; Tune then retries it (``FailureConfig(max_failures=1)``).
WORKER_START_TIMEOUT_S = "120"


def prepare_shared(stem: str, tier_configs: dict[str, Any], say=print) -> None:
    """The store of every tier's data, written once before concurrent trials would race for it."""
    trainable, _space = registry.load(stem)
    for tier, cfg in tier_configs.items():
        say(f"[{stem}] preparing data for tier {tier} ({cfg.data_dir or 'synthetic set'})")
        _splits, meta = data.prepare(trainable, cfg, say=say)
        say(f"[{stem}] rows: {meta['rows']}  in {meta['preprocess_s']}s")


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


def run_trial(params: dict, *, stem: str, tiers: list[str], sets: list[str], data_dir: str, storage: str,
              sweep_dir: str, cpus_per_worker: float, max_failures: int, env: dict) -> None:
    """The Tune trainable: resolve the trial's config, train it on Ray Train, mark it done."""
    os.environ.update(env)  # before fit(): Train passes them on to its controller and workers
    trainable, _space = registry.load(stem)
    tier = params.get("tier", tiers[0])
    sampled = {key: value for key, value in params.items() if key != "tier"}
    cfg = registry.resolve(stem, tier, sets, sampled, data_dir, Path(storage))
    splits, meta = data.prepare(trainable, cfg)

    run_dir = Path(sweep_dir) / TRIALS_DIR / ray.tune.get_context().get_trial_id()
    resumed = (run_dir / artifacts.MANIFEST_FILE).exists()
    manifest = artifacts.start(run_dir, stem, tier, cfg, meta, cluster.hardware(), resumed, dashboard=cluster.start())
    artifacts.write_json(run_dir / artifacts.MANIFEST_FILE, {**manifest, "command": f"python -m platform.tune {stem}",
                                                              "sweep": {"dir": sweep_dir, "params": params}})
    trainer = trainer_lib.build(stem, cfg, meta, splits, run_dir, workers=1, cpus_per_worker=cpus_per_worker,
                                max_failures=max_failures, epoch_lines=False)  # the sweep's table shows them
    params_count = sum(p.numel() for p in trainable.build_model(cfg, meta).parameters())
    # RunConfig.callbacks is read when fit() starts the controller, so it can be extended here.
    trainer.run_config.callbacks.append(SweepReportCallback(params_count, cfg.epochs, trained_seconds(run_dir)))
    trainer.fit()
    artifacts.write_json(run_dir / DONE_FILE, {"finished": artifacts.now()})


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
