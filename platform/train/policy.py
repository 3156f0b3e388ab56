"""When a run takes a checkpoint, what it reports with it, and which checkpoints Ray Train keeps.

Used by every run, e.g. ``python -m platform.run asl --set checkpoint_every_steps=50 --set
keep_checkpoints=2``: the workers ask it when a checkpoint is due (``platform/train/worker.py``) and
the trainer asks it for Ray Train's ``CheckpointConfig`` (``platform/train/trainer.py``). No Ray runs
here. The rules, and why:

- **At an epoch's end** a checkpoint is due when the epoch is the best so far (it is the model the
  run delivers), when it is the last (early stopping or ``epochs``: what the finished run and a
  ``--resume`` of it read), and every ``checkpoint_every`` epochs (a restart replays at most that many).
  Every rank decides alike, on rank 0's metrics, since ``report`` is a barrier.
- **Inside an epoch** one is due every ``checkpoint_every_steps`` optimizer steps (0: never), and once
  when a preemption asks (a SIGTERM to a worker, or the driver's notice; any rank's ask is every
  rank's). It is taken right after an optimizer step, where no gradient is pending, and never after
  an epoch's last step (``platform/train/loop.py``): the epoch's end comes next. It holds the
  position in the epoch and every rank's running sums, so a restart continues exactly.
- **What it reports.** An epoch end reports the epoch's metrics: ``METRIC`` is its score. A checkpoint
  inside an epoch has no validation score, and Ray Train ranks every checkpoint by ``METRIC``: it
  reports ``partial: 1`` and the worst score (-1e30 for ``max``, 1e30 for ``min``; finite, so the
  run's snapshot stays plain JSON). So it is never the best checkpoint, is pruned before any scored
  epoch end, and lives only while it is the latest, which Ray Train always keeps: it is the resume point
  until the next checkpoint. Its readers skip it by its ``partial`` flag: ``checkpoints.best``, the
  monitor, and a sweep's trial (it is no result for Tune's schedulers: ``platform/tune/trial.py``).
- **How many are kept**: Ray Train keeps the ``keep_checkpoints`` best by ``METRIC`` (0: every one)
  and the latest, and deletes the others as each new one is recorded (a later one wins a tie).
"""

from __future__ import annotations

import dataclasses

import ray.train

from platform.config import TrainConfig

WORST = {"max": -1e30, "min": 1e30}


@dataclasses.dataclass(frozen=True)
class CheckpointPolicy:
    """A run's checkpoint rules, from its config and its trainable's ``METRIC``."""

    every_epochs: int
    every_steps: int
    keep: int
    metric: str
    mode: str

    @classmethod
    def of(cls, cfg: TrainConfig, metric: tuple[str, str]) -> CheckpointPolicy:
        name, mode = metric
        return cls(cfg.checkpoint_every, cfg.checkpoint_every_steps, cfg.keep_checkpoints, name, mode)

    def due_at_epoch_end(self, epoch: int, *, improved: bool, last: bool) -> bool:
        """After ``epoch`` epochs, the last one the best so far (``improved``) or the run's last."""
        return improved or last or epoch % self.every_epochs == 0

    def due_inside_epoch(self, step: int, *, preempted: bool) -> bool:
        """After optimizer step ``step`` (not an epoch's last), a preemption asking or not."""
        return (self.every_steps > 0 and step % self.every_steps == 0) or preempted

    def partial_metrics(self, *, epoch: int, step: int, position: int, restarts: int) -> dict:
        """What a checkpoint inside epoch ``epoch + 1`` reports: where it is, and the worst score."""
        return {"epoch": epoch, "step": step, "position": position, "partial": 1, self.metric: WORST[self.mode], "restarts": restarts}

    def checkpoint_config(self) -> ray.train.CheckpointConfig:
        """Ray Train's retention: the ``keep`` best by the metric (and the latest); 0 keeps every one."""
        return ray.train.CheckpointConfig(
            num_to_keep=self.keep or None, checkpoint_score_attribute=self.metric, checkpoint_score_order=self.mode
        )
