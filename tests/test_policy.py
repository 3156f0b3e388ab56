"""The checkpoint policy without a Ray cluster: when a checkpoint is due, what it reports, which are kept.

.venv/bin/python -m pytest tests/test_policy.py
"""

from __future__ import annotations

import asyncio

import pytest
import ray.train
from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import CheckpointManager
from ray.train.v2._internal.execution.context import StorageContext
from ray.train.v2._internal.execution.training_report import _TrainingReport

from platform.config import TrainConfig
from platform.train import checkpoints
from platform.train.policy import CheckpointPolicy

ACCURACY = ("val/acc", "max")
LOSS = ("val/loss", "min")


def test_an_epoch_end_is_checkpointed_when_best_last_or_every_nth():
    policy = CheckpointPolicy.of(TrainConfig(checkpoint_every=3), ACCURACY)
    plain = [epoch for epoch in range(1, 10) if policy.due_at_epoch_end(epoch, improved=False, last=False)]
    assert plain == [3, 6, 9]
    assert policy.due_at_epoch_end(4, improved=True, last=False)
    assert policy.due_at_epoch_end(5, improved=False, last=True)
    every = CheckpointPolicy.of(TrainConfig(), ACCURACY)
    assert all(every.due_at_epoch_end(epoch, improved=False, last=False) for epoch in range(1, 5))


def test_inside_an_epoch_a_checkpoint_is_due_every_n_steps_or_when_preempted():
    policy = CheckpointPolicy.of(TrainConfig(checkpoint_every_steps=50), ACCURACY)
    assert [step for step in range(1, 201) if policy.due_inside_epoch(step, preempted=False)] == [50, 100, 150, 200]
    assert policy.due_inside_epoch(51, preempted=True)
    epoch_ends_only = CheckpointPolicy.of(TrainConfig(checkpoint_every_steps=0), ACCURACY)
    assert not any(epoch_ends_only.due_inside_epoch(step, preempted=False) for step in range(1, 100))
    assert epoch_ends_only.due_inside_epoch(7, preempted=True)


@pytest.mark.parametrize(("metric", "real_scores"), [(ACCURACY, [0.0, -1e6]), (LOSS, [0.0, 1e6])])
def test_a_checkpoint_inside_an_epoch_reports_where_it_is_and_a_score_worse_than_any_real_one(metric, real_scores):
    policy = CheckpointPolicy.of(TrainConfig(), metric)
    reported = policy.partial_metrics(epoch=2, step=41, position=320, restarts=1)
    name, mode = metric
    assert {k: v for k, v in reported.items() if k != name} == {"epoch": 2, "step": 41, "position": 320, "partial": 1, "restarts": 1}
    worse = (lambda a, b: a < b) if mode == "max" else (lambda a, b: a > b)
    assert all(worse(reported[name], score) for score in real_scores)


def test_ray_train_keeps_the_best_n_by_the_trainables_metric_and_zero_keeps_every_one():
    kept = CheckpointPolicy.of(TrainConfig(keep_checkpoints=3), LOSS).checkpoint_config()
    assert (kept.num_to_keep, kept.checkpoint_score_attribute, kept.checkpoint_score_order) == (3, "val/loss", "min")
    assert CheckpointPolicy.of(TrainConfig(keep_checkpoints=0), ACCURACY).checkpoint_config().num_to_keep is None


def test_a_checkpoint_inside_an_epoch_lives_only_while_it_is_the_latest_and_is_never_the_best(tmp_path):
    """Ray Train's own checkpoint manager (no cluster), given the policy's CheckpointConfig and reports."""
    policy = CheckpointPolicy.of(TrainConfig(keep_checkpoints=2), ACCURACY)
    run = tmp_path / "run"

    async def record_all() -> list[list[str]]:
        manager = CheckpointManager(policy.checkpoint_config(), StorageContext(storage_path=str(tmp_path), experiment_dir_name="run"))
        on_disk = []
        for name, metrics in [
            ("epoch_1", {"epoch": 1, "val/acc": 0.5}),
            ("inside_2", policy.partial_metrics(epoch=1, step=13, position=40, restarts=0)),
            ("epoch_2", {"epoch": 2, "val/acc": 0.25}),
            ("epoch_3", {"epoch": 3, "val/acc": 0.125}),
            ("inside_4", policy.partial_metrics(epoch=3, step=40, position=40, restarts=0)),
        ]:
            (run / name).mkdir(parents=True)
            (run / name / checkpoints.STATE_FILE).write_bytes(b"state")
            manager.register_checkpoint(_TrainingReport(ray.train.Checkpoint(str(run / name)), metrics, validation=False))
            on_disk.append(sorted(p.name for p in run.iterdir() if p.is_dir()))
        return on_disk

    on_disk = asyncio.run(record_all())
    assert on_disk[1] == ["epoch_1", "inside_2"]  # the latest: the resume point
    assert on_disk[2] == ["epoch_1", "epoch_2"]  # pruned before an epoch end with a worse score
    assert on_disk[3] == ["epoch_1", "epoch_2", "epoch_3"]  # the two best, and the latest
    assert on_disk[4] == ["epoch_1", "epoch_2", "inside_4"]
    snapshot = checkpoints.read_snapshot(str(run))
    assert [row["dir"] for row in checkpoints.recorded(snapshot)][0] == "inside_4"
    assert checkpoints.best(snapshot, *ACCURACY)["dir"] == "epoch_1"
