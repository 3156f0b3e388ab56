"""TensorBoard event files of a run's metrics, written as the epochs are reported.

Every ``python -m platform.run asl`` writes ``<run dir>/tensorboard/``; compare runs with
``tensorboard --logdir runs``.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import ray.train


class TensorBoardCallback(ray.train.UserCallback):
    """Runs in Ray Train's controller, which sits on the driver's node, beside the run directory."""

    def __init__(self, folder: Path):
        self.folder = str(folder)
        self._writer = None

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        from tensorboardX import SummaryWriter

        if self._writer is None:
            self._writer = SummaryWriter(self.folder, flush_secs=5)
        reported = metrics[0]  # every rank reports the same validation metrics and averaged train ones
        for key, value in reported.items():
            if key != "epoch" and isinstance(value, numbers.Real):
                self._writer.add_scalar(key, value, global_step=int(reported["epoch"]))
        self._writer.flush()

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "_writer": None}
