"""Ray Train: the ``TorchTrainer`` behind ``python -m platform.run asl`` (and each Tune trial).

A run is named, so building it again with the same ``RunConfig(storage_path, name)`` continues
from its ``checkpoint_manager_snapshot.json`` (``--resume``; Ray Train V2 has no ``restore``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray.data
import ray.train
from ray.train.torch import TorchTrainer

from platform import config as config_lib
from platform import registry
from platform.artifacts import TENSORBOARD_DIR
from platform.cluster import QUIET_ENV, default_cpus_per_worker
from platform.tensorboard import TensorBoardCallback
from platform.worker import train_loop_per_worker


def data_config(workers: int) -> ray.train.DataConfig:
    """Validation is not split (every rank scores all of it); order is kept for exact resumes.
    One worker reads its splits directly: a streaming split's coordinator actor would divide nothing
    and cost it about 8% of an epoch on two cores (a probe recorded in bench/README.md)."""
    options = ray.data.ExecutionOptions(preserve_order=True)
    return ray.train.DataConfig(datasets_to_split=["train"] if workers > 1 else [], execution_options=options)


def build(
    stem: str,
    cfg: Any,
    meta: dict,
    datasets: dict[str, ray.data.Dataset],
    run_dir: Path,
    *,
    workers: int = 1,
    use_gpu: bool = False,
    cpus_per_worker: float | None = None,
    max_failures: int = 3,
    fail_at_epoch: int | None = None,
    train_storage: str | None = None,
) -> TorchTrainer:
    """A named Ray Train run writing to ``run_dir``; ``fit()`` it, or call it from a Tune trial.
    Checkpoints go to ``<train_storage>/<run name>`` (an object-store URI), by default ``run_dir``."""
    metric, mode = registry.load(stem)[0].METRIC
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "stem": stem,
            "config": config_lib.to_dict(cfg),
            "meta": meta,
            "fail_at_epoch": fail_at_epoch,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker or default_cpus_per_worker(workers)},
        ),
        run_config=ray.train.RunConfig(
            name=run_dir.name,
            storage_path=train_storage or str(run_dir.parent),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.keep_checkpoints or None,
                checkpoint_score_attribute=metric,
                checkpoint_score_order=mode,
            ),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=[TensorBoardCallback(run_dir / TENSORBOARD_DIR)],
            worker_runtime_env={"env_vars": QUIET_ENV},
        ),
        datasets=datasets,
        dataset_config=data_config(workers),
    )
