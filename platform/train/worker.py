"""What each Ray Train worker runs: the loop of ``platform/train/loop.py`` with checkpoints and reports.

Started by ``python -m platform.run asl`` (through ``TorchTrainer``). Rank 0 writes the
checkpoints; every rank reports once an epoch (``ray.train.report`` is a barrier). Validation
data is not split, and every rank takes rank 0's epoch metrics, so all stop at the same epoch.
A ``UserError`` in a worker (a NaN loss) ends the run without a retry (``platform/train/trainer.py``).
When a checkpoint is due and what it reports is ``platform/train/policy.py``'s to say; this module
reports it, and carries a preemption's request and answer (``platform/train/preempt.py``).

Data: each rank streams its part of every global step from the preprocessed store
(``platform/data/stream.py``), in the order ``platform/train/exact.py`` defines.

Fault injection, for tests and demos: ``python -m platform.run asl --fail-at-epoch 3`` makes the
rank-0 worker process exit abruptly as it starts epoch 3 of its first attempt; Ray Train then
restarts the workers from the latest checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray.data
import ray.train
import ray.train.torch
import torch
from ray.train.v2._internal.execution import context as train_context

from platform import config as config_lib
from platform import registry
from platform.contract import Trainable
from platform.data import stream
from platform.data.store import Split
from platform.errors import UserError
from platform.tracking import progress
from platform.train import checkpoints, exact, preempt
from platform.train.exact import seed_everything
from platform.train.loop import TrainState, new_state, run_epoch, unwrap
from platform.train.policy import CheckpointPolicy

# A folder: each rank appends one JSON line a batch (epoch, position, store row ids, pid), for
# the tests that check which samples a killed and resumed run trained.
TRACE_ENV = "RAYPLATFORM_TRACE_DIR"


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    _quiet()
    trainable = registry.load(loop_config["stem"])
    cfg = config_lib.from_dict(trainable.Config, loop_config["config"])
    meta = loop_config["meta"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = _device(loop_config)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.amp

    seed_everything(cfg.seed)
    model = ray.train.torch.prepare_model(trainable.build_model(cfg, meta), move_to_device=device)
    splits = {name: Split(uri, manifest) for name, (uri, manifest) in loop_config["store"].items()}
    steps_per_epoch = -(-exact.step_count(splits["train"].rows, world, cfg.batch_size) // cfg.grad_accum_steps)
    state = new_state(model, cfg, device, steps_per_epoch)
    _restore(state, rank, world, loop_config["snapshot"].rsplit("/", 1)[0])

    policy = CheckpointPolicy.of(cfg, trainable.METRIC)
    started = time.perf_counter()
    epochs_this_attempt = 0
    after_step = _step_checkpoints(policy, loop_config, rank, world)
    while not state.should_stop(cfg):
        _maybe_inject_fault(loop_config.get("fail_at_epoch"), state, rank)
        trainable.on_epoch_start(unwrap(model), state.epoch, cfg)
        schedule = trainable.epoch_schedule(state.epoch, cfg)
        train_batches = _traced(_train_batches(trainable, splits["train"], state, schedule, cfg, rank, world), state, rank, world)
        if loop_config.get("progress") and rank == 0:
            train_batches = _with_bar(train_batches, trainable, splits["train"], state, cfg, world)
        val_batches = stream.split_batches(splits["val"], cfg.batch_size)
        metrics, extras = run_epoch(trainable, state, train_batches, val_batches, cfg, device, rank=rank, after_step=after_step)
        metrics.update({f"schedule/{key}": value for key, value in schedule.items()})
        metrics.update(_mean_over_workers({k: v for k, v in metrics.items() if k.startswith("train/")}, device))
        metrics["restarts"] = state.restarts
        metrics = _from_rank0(metrics, world)
        improved = state.record(metrics, policy.metric, policy.mode)
        epochs_this_attempt += 1
        is_due = policy.due_at_epoch_end(state.epoch, improved=improved, last=state.should_stop(cfg))
        _report(state, metrics, extras, loop_config, is_due, rank)
        if rank == 0 and loop_config.get("epoch_lines", True):
            seconds_per_epoch = (time.perf_counter() - started) / epochs_this_attempt
            say(progress.epoch_line(trainable.stem, metrics, cfg.epochs, seconds_per_epoch, improved))


def _device(loop_config: dict) -> torch.device:
    """Ray Train's device for this worker; without ``--gpu``, the CPU: in local mode Ray Train would
    take any GPU this process sees, where a worker without one sees none."""
    return ray.train.torch.get_device() if loop_config.get("gpu") else torch.device("cpu")


def _train_batches(trainable: Trainable, split: Split, state: TrainState, schedule: dict, cfg: Any, rank: int, world: int):
    """This rank's (batch, store ids, position) of the epoch, from ``state.position`` on, made ahead
    by a background thread."""
    return stream.prefetched(
        stream.rank_batches(
            split,
            rank=rank,
            world=world,
            seed=cfg.seed,
            epoch=state.epoch,
            batch_size=cfg.batch_size,
            shards_per_window=max(1, cfg.shuffle_buffer // cfg.shard_rows),
            bucket=cfg.bucket_by_length,
            position=state.position,
            keep=_window_filter(trainable, schedule, cfg),
        )
    )


def _with_bar(batches, trainable: Trainable, split: Split, state: TrainState, cfg: Any, world: int):
    """The epoch's steps as a progress bar in the driver's terminal; its length is unknown when a
    curriculum filters the windows as they are read."""
    total = None if trainable.train_filter else exact.step_count(split.rows - state.position, world, cfg.batch_size)
    return progress.epoch_steps(
        batches,
        total=total,
        title=f"[{trainable.stem}] epoch {state.epoch + 1}/{cfg.epochs}",
        samples_per_step=world * cfg.batch_size,
        state=state,
    )


def _window_filter(trainable: Trainable, schedule: dict, cfg: Any):
    """``train_filter`` over a shuffle window's scalar columns, or None when the trainable has none."""
    if trainable.train_filter is None:
        return None

    def keep(window: stream.Window) -> np.ndarray:
        scalars = {k: torch.from_numpy(np.asarray(v)) for k, v in window.columns.items() if window.specs[k]["kind"] == "scalar"}
        return torch.as_tensor(trainable.train_filter(scalars, schedule, cfg)).numpy()

    return keep


def _traced(batches, state: TrainState, rank: int, world: int):
    """(batch, position) for the loop; with ``RAYPLATFORM_TRACE_DIR`` set, one line a batch there."""
    folder = os.environ.get(TRACE_ENV)
    trace = open(Path(folder) / f"rank{rank}-{os.getpid()}.jsonl", "a", encoding="utf-8") if folder else None  # noqa: SIM115
    before = state.position
    try:
        for batch, ids, position in batches:
            if trace is not None:
                trace.write(
                    json.dumps(
                        {
                            "epoch": state.epoch + 1,
                            "position": before,
                            "rank": rank,
                            "world": world,
                            "ids": ids.tolist(),
                            "pid": os.getpid(),
                        }
                    )
                    + "\n"
                )
                trace.flush()
            before = position
            yield batch, position
    finally:
        if trace is not None:
            trace.close()


def _quiet() -> None:
    """One progress line an epoch: Train's per-report INFO lines and Data's bars would bury it."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    # Ray Train's report log line is on a logger named by its file path, outside "ray.train".
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False


def _mean_over_workers(metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    """Each rank's training metrics cover its own shard; the run's are their mean."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return metrics
    values = torch.tensor(list(metrics.values()), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(values)
    return dict(zip(metrics, (values / torch.distributed.get_world_size()).tolist()))


def _from_rank0(metrics: dict, world: int) -> dict:
    """Rank 0's epoch metrics on every rank, so "best" and "stop" are one decision: ranks that
    disagreed would report a different number of times and hang in ``report`` (a barrier)."""
    if world == 1:
        return metrics
    holder = [metrics]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]


def _restore(state: TrainState, rank: int, world: int, run_uri: str) -> None:
    """Continue from Ray Train's latest checkpoint (a worker restart or ``--resume``), or from the
    newest one before it that reads whole. Every rank reads the same files, so all pick the same."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return
    found = checkpoints.load_newest(run_uri, first=Path(checkpoint.path).name, warn=say if rank == 0 else None)
    if found is None:
        raise UserError(f"no checkpoint of {run_uri} is readable: start the run again under another --name")
    folder, saved = found
    state.load_state_dict(saved, rank, world)
    state.restarts += 1
    if rank == 0:
        inside = f", {state.position} samples into epoch {state.epoch + 1}" if state.position else ""
        say(f"restored from {run_uri}/{folder} at epoch {state.epoch}{inside} (restart {state.restarts})")


def _step_checkpoints(policy: CheckpointPolicy, loop_config: dict, rank: int, world: int):
    """``after_step`` for the loop: the checkpoint inside an epoch that ``policy`` says is due, with
    every rank's running sums; after one a preemption asked for, the answer to it."""
    notice = loop_config.get("notice")
    preempted = preempt.watch(notice)
    device = _device(loop_config)

    def after_step(state: TrainState) -> None:
        asked = _any_rank(preempted(), world, device)
        if not policy.due_inside_epoch(state.step, preempted=asked):
            return
        partials = [state.partial]
        if world > 1:
            partials = [None] * world
            torch.distributed.all_gather_object(partials, state.partial)
        metrics = policy.partial_metrics(epoch=state.epoch, step=state.step, position=state.position, restarts=state.restarts)
        name = _report(state, metrics, {}, loop_config, True, rank, partials)
        if asked:
            if rank == 0:
                preempt.answer(notice, loop_config["snapshot"], name)
            _any_rank(True, world, device)  # every rank waits for rank 0's checkpoint to be recorded
            preempt.exit_or_hold(say, name)

    return after_step


def _any_rank(flag: bool, world: int, device: torch.device) -> bool:
    """One answer for every rank, so all of them report the same checkpoint (a barrier)."""
    if world == 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def _maybe_inject_fault(fail_at_epoch: int | None, state: TrainState, rank: int) -> None:
    if fail_at_epoch and rank == 0 and state.restarts == 0 and state.epoch + 1 == fail_at_epoch:
        say(f"fault injection: worker exits as epoch {fail_at_epoch} starts")
        os._exit(1)


def _report(
    state: TrainState, metrics: dict, extras: dict, loop_config: dict, due: bool, rank: int, partials: list[dict] | None = None
) -> str | None:
    """Every rank reports (it is a barrier); rank 0 attaches the checkpoint when one is due and
    returns its name."""
    if not (due and rank == 0):
        ray.train.report(metrics)
        return None
    with tempfile.TemporaryDirectory(prefix="checkpoint-") as directory:
        saved = {**state.state_dict(), "extras": extras}
        if partials is not None:
            saved["partial"] = partials
        torch.save(saved, Path(directory) / checkpoints.STATE_FILE)
        (Path(directory) / "config.json").write_text(json.dumps(loop_config["config"], indent=2, sort_keys=True))
        (Path(directory) / "meta.json").write_text(json.dumps(loop_config["meta"], indent=2))
        if loop_config.get("run"):  # what --resume needs when a crash tore the run directory's files
            (Path(directory) / checkpoints.RUN_FILE).write_text(json.dumps(loop_config["run"], indent=2))
        checkpoint = ray.train.Checkpoint.from_directory(directory)
        # A replayed epoch after a restart must not reuse the name of an orphaned directory.
        name = checkpoints.name(state.epoch, state.step, state.restarts, bool(metrics.get("partial")))
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
    return name


def say(line: str) -> None:
    """Straight to stdout: Ray Train's patched ``print`` would show every line twice."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
