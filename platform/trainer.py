"""Ray Train: the ``TorchTrainer`` behind ``python -m platform.run asl`` (and each Tune trial).

A run is named, so building it again with the same ``RunConfig(storage_path, name)`` continues
from its ``checkpoint_manager_snapshot.json`` (``--resume``; Ray Train V2 has no ``restore``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType
from typing import Any

import ray.data
import ray.train
from ray.train.torch import TorchTrainer

from platform import config as config_lib
from platform.cluster import QUIET_ENV, cluster_cpus
from platform.worker import train_loop_per_worker


def data_config() -> ray.train.DataConfig:
    """Validation is not split (every rank scores all of it); order is kept for exact resumes."""
    options = ray.data.ExecutionOptions(preserve_order=True)
    return ray.train.DataConfig(datasets_to_split=["train"], execution_options=options)


def build(
    args: argparse.Namespace, trainable: ModuleType, cfg: Any, meta: dict,
    datasets: dict[str, ray.data.Dataset], run_dir: Path,
) -> TorchTrainer:
    metric, mode = trainable.METRIC
    cpus_per_worker = args.cpus_per_worker or max(1, cluster_cpus() // args.workers)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "stem": args.stem,
            "config": config_lib.to_dict(cfg),
            "meta": meta,
            "fail_at_epoch": args.fail_at_epoch,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=args.workers, use_gpu=args.gpu, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(
            name=run_dir.name,
            storage_path=str(run_dir.parent),
            failure_config=ray.train.FailureConfig(max_failures=args.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.keep_checkpoints,
                checkpoint_score_attribute=metric,
                checkpoint_score_order=mode,
            ),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            worker_runtime_env={"env_vars": QUIET_ENV},
        ),
        datasets=datasets,
        dataset_config=data_config(),
    )
