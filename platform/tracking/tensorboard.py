"""TensorBoard event files of a run's metrics, written as the epochs are reported.

Every ``python -m platform.run asl`` writes ``<run dir>/tensorboard/``; compare runs with
``tensorboard --logdir runs``. When the run finishes, the files are rewritten from its history:
the last report can race the controller's shutdown, and a restarted run replays epochs.
"""

from __future__ import annotations

import numbers
import shutil
from pathlib import Path

import ray.train


class TensorBoardCallback(ray.train.UserCallback):
    """Runs in Ray Train's controller, which sits on the driver's node, beside the run directory."""

    def __init__(self, folder: Path):
        self.folder = str(folder)
        self._writer = None

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        from tensorboardX import SummaryWriter

        if metrics[0].get("partial"):  # a checkpoint inside an epoch, not an epoch's metrics
            return
        if self._writer is None:
            self._writer = SummaryWriter(self.folder, flush_secs=5)
        # Every rank reports the same validation metrics and averaged training ones.
        add_epoch(self._writer, metrics[0])
        self._writer.flush()

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "_writer": None}


def add_epoch(writer, metrics: dict) -> None:
    for key, value in metrics.items():
        if key != "epoch" and isinstance(value, numbers.Real):
            writer.add_scalar(key, value, global_step=int(metrics["epoch"]))


def write_history(folder: Path, history: list[dict]) -> None:
    """The finished run's event file: one point an epoch, as in ``history.csv``."""
    from tensorboardX import SummaryWriter

    shutil.rmtree(folder, ignore_errors=True)
    with SummaryWriter(str(folder)) as writer:
        for row in history:
            add_epoch(writer, row)
