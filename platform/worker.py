"""What each Ray Train worker runs: the loop of ``platform/loop.py`` with checkpoints and reports.

Started by ``python -m platform.run asl`` (through ``TorchTrainer``). Rank 0 writes the
checkpoints; every rank reports once an epoch (``ray.train.report`` is a barrier). Validation
data is not split, so every rank computes the same metrics and stops at the same epoch.

Fault injection, for tests and demos: ``python -m platform.run asl --fail-at-epoch 3`` makes the
rank-0 worker process exit abruptly as it starts epoch 3 of its first attempt; Ray Train then
restarts the workers from the latest checkpoint.
"""

from __future__ import annotations

import importlib
import itertools
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.data
import ray.train
import ray.train.torch
import torch
from ray.train.v2._internal.execution import context as train_context

from platform import config as config_lib
from platform.loop import TrainState, epoch_seed, keep_rows, new_state, run_epoch, seed_everything, unwrap

STATE_FILE = "state.pt"


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    _quiet()
    trainable = importlib.import_module(f"trainables.{loop_config['stem']}")
    cfg = config_lib.from_dict(trainable.Config, loop_config["config"])
    meta = loop_config["meta"]
    context = ray.train.get_context()
    rank = context.get_world_rank()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.amp

    seed_everything(cfg.seed)
    model = ray.train.torch.prepare_model(trainable.build_model(cfg, meta))
    state = new_state(model, cfg, device)
    _restore(state)

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    metric, mode = trainable.METRIC
    started = time.perf_counter()
    epochs_this_attempt = 0
    while not state.should_stop(cfg):
        _maybe_inject_fault(loop_config.get("fail_at_epoch"), state, rank)
        shuffle_seed = epoch_seed(cfg.seed, state.epoch, rank)
        seed_everything(shuffle_seed)
        if hasattr(trainable, "on_epoch_start"):
            trainable.on_epoch_start(unwrap(model), state.epoch, cfg)
        schedule = trainable.epoch_schedule(state.epoch, cfg) if hasattr(trainable, "epoch_schedule") else {}
        train_batches = train_shard.iter_torch_batches(
            batch_size=cfg.batch_size,
            local_shuffle_buffer_size=cfg.shuffle_buffer or None,
            local_shuffle_seed=shuffle_seed,
        )
        if hasattr(trainable, "train_filter"):
            train_batches = _filtered(trainable, train_shard, train_batches, schedule, cfg, device)
        val_batches = val_shard.iter_torch_batches(batch_size=cfg.batch_size)
        metrics, extras = run_epoch(trainable, state, train_batches, val_batches, cfg, device)
        metrics.update({f"schedule/{key}": value for key, value in schedule.items()})
        metrics.update(_mean_over_workers({k: v for k, v in metrics.items() if k.startswith("train/")}, device))
        metrics["restarts"] = state.restarts
        improved = state.record(metrics, metric, mode)
        epochs_this_attempt += 1
        is_due = improved or state.should_stop(cfg) or state.epoch % cfg.checkpoint_every == 0
        _report(state, metrics, extras, loop_config, is_due and rank == 0)
        if rank == 0:
            seconds_per_epoch = (time.perf_counter() - started) / epochs_this_attempt
            say(progress_line(loop_config["stem"], metrics, cfg.epochs, seconds_per_epoch, improved))


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


def _filtered(trainable, shard, batches, schedule: dict, cfg: Any, device: torch.device):
    """The rows ``train_filter`` keeps this epoch (a curriculum's unlocked stages). With several
    workers each rank takes as many batches as the poorest, as DDP needs equal step counts."""
    keep = lambda batch: trainable.train_filter(batch, schedule, cfg)  # noqa: E731
    kept = keep_rows(batches, keep, cfg.batch_size)
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return kept
    rows = sum(int(torch.as_tensor(keep(b)).sum()) for b in shard.iter_torch_batches(batch_size=cfg.batch_size))
    count = torch.tensor([math.ceil(rows / cfg.batch_size)], device=device)
    torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MIN)
    return itertools.islice(kept, int(count.item()))


def _restore(state: TrainState) -> None:
    """Continue from Ray Train's latest checkpoint (a worker restart or ``--resume``)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as directory:
        saved = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
    state.load_state_dict(saved)
    state.restarts += 1
    if ray.train.get_context().get_world_rank() == 0:
        say(f"restored from {checkpoint.path} at epoch {state.epoch} (restart {state.restarts})")


def _maybe_inject_fault(fail_at_epoch: int | None, state: TrainState, rank: int) -> None:
    if fail_at_epoch and rank == 0 and state.restarts == 0 and state.epoch + 1 == fail_at_epoch:
        say(f"fault injection: worker exits as epoch {fail_at_epoch} starts")
        os._exit(1)


def _report(state: TrainState, metrics: dict, extras: dict, loop_config: dict, with_checkpoint: bool) -> None:
    if not with_checkpoint:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="checkpoint-") as directory:
        torch.save({**state.state_dict(), "extras": extras}, Path(directory) / STATE_FILE)
        (Path(directory) / "config.json").write_text(json.dumps(loop_config["config"], indent=2, sort_keys=True))
        (Path(directory) / "meta.json").write_text(json.dumps(loop_config["meta"], indent=2))
        checkpoint = ray.train.Checkpoint.from_directory(directory)
        # A replayed epoch after a restart must not reuse the name of an orphaned directory.
        name = f"epoch_{state.epoch:04d}-attempt_{state.restarts}"
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)


def say(line: str) -> None:
    """Straight to stdout: Ray Train's patched ``print`` would show every line twice."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def progress_line(stem: str, metrics: dict, total_epochs: int, seconds_per_epoch: float, improved: bool) -> str:
    shown = [f"{key} {value:.4f}" for key, value in metrics.items() if is_headline(key)]
    shown += [f"{key.split('/', 1)[1]} {value}" for key, value in metrics.items() if key.startswith("schedule/")]
    remaining = max(0, total_epochs - int(metrics["epoch"]))
    return (
        f"[{stem}] epoch {metrics['epoch']}/{total_epochs}  {'  '.join(shown)}  lr {metrics['lr']:.2e}  "
        f"{metrics['epoch_s']:.1f}s  ETA {format_seconds(remaining * seconds_per_epoch)}{'  *best' if improved else ''}"
    )


def is_headline(key: str) -> bool:
    """``val/acc`` is shown in a progress line; ``val/recall/joy`` and its kind stay in the history."""
    return key.startswith(("train/", "val/", "test/")) and key.count("/") == 1


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
