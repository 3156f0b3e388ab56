"""Ray Train: the ``TorchTrainer`` behind ``python -m platform.run asl`` (and each Tune trial).

A run is named, so building it again with the same ``RunConfig(storage_path, name)`` continues
from its ``checkpoint_manager_snapshot.json`` (``--resume``; Ray Train V2 has no ``restore``).
Which checkpoints it keeps is ``platform/train/policy.py``'s ``CheckpointConfig``. ``--workers 0``
runs it in this process (``platform/train/local.py``).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import ray.train
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy

from platform import config as config_lib
from platform.cluster import QUIET_ENV, default_cpus_per_worker
from platform.contract import Trainable
from platform.data.store import Split
from platform.errors import find_user_error
from platform.launching import Launch
from platform.runs.artifacts import TENSORBOARD_DIR
from platform.runs.storage import RunLocation
from platform.tracking.tensorboard import TensorBoardCallback
from platform.train import checkpoints, local
from platform.train.policy import CheckpointPolicy
from platform.train.worker import TRACE_ENV, train_loop_per_worker


def build(
    trainable: Trainable,
    cfg: Any,
    meta: dict,
    splits: dict[str, Split],
    location: RunLocation,
    launch: Launch,
    *,
    notice: Any = None,
    show_progress: bool = False,
    epoch_lines: bool = True,
    callbacks: list | None = None,
    run_info: dict | None = None,
) -> TorchTrainer:
    """The named Ray Train run at ``location`` on ``launch``'s workers; ``fit()`` it. Checkpoints go
    where the run lives (``location.run_uri``: its folder, or its folder in the object store).
    ``callbacks``: the run's trackers (``platform/tracking/trackers.py``), by default TensorBoard's.
    ``run_info``: the run's tier, launch and start, kept in each checkpoint (``checkpoints.RUN_FILE``)."""
    return _Trainer(
        train_loop_per_worker,
        train_loop_config={
            "stem": trainable.stem,  # the workers load it themselves
            "config": config_lib.to_dict(cfg),
            "meta": meta,
            # Where each split's shards are and their manifest: the workers read them directly.
            "store": {name: (split.uri, split.manifest) for name, split in splits.items() if name != "test"},
            "fail_at_epoch": launch.fail_at_epoch,
            "gpu": launch.gpu,
            "notice": notice,  # the driver's preemption notice (platform/train/preempt.py)
            "progress": show_progress,  # a bar of each epoch's steps in the driver's terminal
            "epoch_lines": epoch_lines,  # rank 0's line an epoch (a sweep shows its trial table instead)
            "snapshot": f"{location.run_uri}/{checkpoints.SNAPSHOT_FILE}",
            "run": run_info,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=launch.workers,
            use_gpu=launch.gpu,
            resources_per_worker={"CPU": launch.cpus_per_worker or default_cpus_per_worker(launch.world_size)},
        ),
        run_config=ray.train.RunConfig(
            name=location.name,
            storage_path=location.train_storage,
            failure_config=ray.train.FailureConfig(max_failures=launch.restarts_allowed),
            checkpoint_config=CheckpointPolicy.of(cfg, trainable.METRIC).checkpoint_config(),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=[TensorBoardCallback(location.local / TENSORBOARD_DIR)] if callbacks is None else list(callbacks),
            # Local mode: this process has them already (platform/cluster.py sets QUIET_ENV, the tests TRACE_ENV).
            worker_runtime_env={"env_vars": {**QUIET_ENV, **_trace_env()}},
        ),
    )


def _trace_env() -> dict[str, str]:
    return {TRACE_ENV: os.environ[TRACE_ENV]} if os.environ.get(TRACE_ENV) else {}


class _UserErrorsEndTheRun(DefaultFailurePolicy):
    """Ray Train's policy, except that a ``UserError`` raised in a worker (a NaN loss, a bad file
    found while training) ends the run at once: a retry would fail the same way, minutes later."""

    def _is_retryable_error(self, training_failed_error) -> bool:
        return find_user_error(training_failed_error) is None and super()._is_retryable_error(training_failed_error)


class _Trainer(TorchTrainer):
    """``TorchTrainer`` with :class:`_UserErrorsEndTheRun`. Ray Train V2 takes no policy from its
    public API (``FailureConfig`` only counts): this is the one internal it is given here. In local
    mode, :class:`local.Controller` instead of Ray Train's, which keeps no checkpoint."""

    def _get_local_controller(self) -> local.Controller:
        return local.Controller(
            self.run_config.name,
            self.run_config.storage_context,
            self.run_config.checkpoint_config,
            list(self.run_config.callbacks or []),
            threads=max(1, int(self.scaling_config.resources_per_worker["CPU"])),  # as Ray sets OMP_NUM_THREADS
        )

    def _initialize_and_run_controller(self, **controller_init_kwargs):
        controller_init_kwargs["failure_policy"] = _UserErrorsEndTheRun(self.run_config.failure_config)
        interrupt = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
        try:
            return super()._initialize_and_run_controller(**controller_init_kwargs)
        finally:
            # Ray's Ctrl-C handler holds the controller actor: put ours back, so that the actor
            # ends with its run instead of living on in a notebook until the next run.
            if interrupt is not None:
                signal.signal(signal.SIGINT, interrupt)
