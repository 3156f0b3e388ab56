"""Local mode: the training function in this process, with what Ray Train's controller does for it.

    python -m platform.run asl --tier smoke --workers 0

Ray Train V2 runs the function in the driver when ``ScalingConfig(num_workers=0)``, but its
``LocalController`` keeps nothing: a report's checkpoint stays in the worker's temporary folder
(deleted as ``report`` returns), no ``checkpoint_manager_snapshot.json`` is written, no callback is
called, and the next run starts from no checkpoint. :class:`Controller` gives the function the rest
of a one-worker run, with Ray Train's own parts where they exist: each checkpoint is copied into
the run's storage (``StorageContext``) and recorded and pruned by Ray Train's ``CheckpointManager``,
so the snapshot is the one a Ray Train run writes (``--resume`` reads it, on any ``--workers``); the
run's callbacks (TensorBoard, MLflow) get each report; a resume starts from the latest checkpoint.

What differs from one worker: no worker restarts (a crash ends the run; ``--resume`` continues it),
no process of its own (the function shares the driver's, its environment and its ``torch`` threads,
set to ``cpus_per_worker`` while it trains) and no Ray actor for a preemption (a SIGTERM is this
process's own: ``platform/train/preempt.py``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import torch
from ray.train import Checkpoint, CheckpointConfig, Result
from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import CheckpointManager
from ray.train.v2._internal.execution.local_mode.torch import LocalTorchController
from ray.train.v2._internal.execution.storage import StorageContext
from ray.train.v2._internal.execution.train_fn_utils import LocalTrainFnUtils, set_train_fn_utils
from ray.train.v2._internal.execution.training_report import _TrainingReport

NOTICE = "local mode (--workers 0): training in this process, with no worker restarts: a crash ends the run, --resume continues it"


class _Reports(LocalTrainFnUtils):
    """``ray.train.report`` and ``get_checkpoint`` in local mode, as a one-worker run has them."""

    def __init__(self, name: str, manager: CheckpointManager, storage: StorageContext, callbacks: list, loop: asyncio.AbstractEventLoop):
        super().__init__(experiment_name=name)
        self._manager, self._storage, self._callbacks, self._loop = manager, storage, callbacks, loop
        latest = manager.latest_checkpoint_result
        self._last_checkpoint = latest.checkpoint if latest else None

    def report(self, metrics: dict, checkpoint: Checkpoint | None = None, checkpoint_dir_name: str | None = None, **_options: Any) -> None:
        self._last_metrics = metrics
        persisted = None
        if checkpoint is not None:
            name = checkpoint_dir_name or self._storage.make_default_checkpoint_dir_name()
            persisted = self._storage.persist_current_checkpoint(checkpoint, name)
            self._last_checkpoint = persisted
            self._register(_TrainingReport(checkpoint=persisted, metrics=metrics, validation=False))
        for callback in self._callbacks:
            callback.after_report(run_context=None, metrics=[metrics], checkpoint=persisted)

    def _register(self, report: _TrainingReport) -> None:
        # The manager tells its waiters on an asyncio task: it needs a running loop, as in the controller.
        async def register() -> None:
            self._manager.register_checkpoint(report)

        asyncio.run_coroutine_threadsafe(register(), self._loop).result()


class Controller(LocalTorchController):
    """Runs the training function here; its result is the ``Result`` a one-worker run returns."""

    def __init__(self, name: str, storage: StorageContext, checkpoint_config: CheckpointConfig, callbacks: list, threads: int):
        super().__init__(experiment_name=name)
        self._storage, self._checkpoint_config, self._callbacks, self._threads = storage, checkpoint_config, callbacks, threads

    def run(self, train_func: Callable[[], Any]) -> Result:
        # The manager's loop runs in a thread of its own: a notebook's cell runs inside the kernel's
        # loop, where this thread could run no other; one loop a run (the manager's Condition binds to it).
        loop = asyncio.new_event_loop()
        running = threading.Thread(target=loop.run_forever, daemon=True, name="rayplatform-local-checkpoints")
        running.start()
        before = torch.get_num_threads()
        torch.set_num_threads(self._threads)  # what a worker reserving cpus_per_worker CPUs runs on
        try:
            manager = CheckpointManager(checkpoint_config=self._checkpoint_config, storage_context=self._storage)
            set_train_fn_utils(_Reports(self.experiment_name, manager, self._storage, self._callbacks, loop))
            returned = train_func()
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result()  # the manager's last notification
        finally:
            torch.set_num_threads(before)
            loop.call_soon_threadsafe(loop.stop)
            running.join()
            loop.close()
        result = Result._from_checkpoint_manager(checkpoint_manager=manager, storage_context=self._storage)
        result.return_value = returned
        return result
