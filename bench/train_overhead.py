"""Training overhead: the same ASL model, data, seed and steps, a plain PyTorch loop vs ``platform.run``.

    .venv/bin/python -m bench.train_overhead [--small | --full]

``--small`` (default): tier fast, 4 epochs, one round (about 5 minutes here, Ray start-ups included).
``--full``: tier standard, 4 epochs, three rounds (about 40 minutes here).
Run from the repository root (``python -m`` puts it first on sys.path, ahead of the standard
library's ``platform``).

Baseline: bench/plain_loop.py (tensors in a DataLoader, the model, AdamW, cosine schedule). Platform:
``python -m platform.run asl --tier T --set epochs=N --set min_steps=0`` on one Ray Train worker, as
a subprocess (``min_steps=0``: exactly N epochs, as the plain loop trains).
A round runs the plain loop, the platform, the plain loop in Ray Train and the platform's loop
without Ray (below) one after another; the ratios are taken within each round, since a shared
machine's speed drifts by more than the differences measured here, and their median over the rounds
is reported with each round's.

The plain loop pads every sequence to ``max_len`` (the seed's way); the platform reads the
preprocessed store, whose batches are padded to their own longest row, so a ratio above 1 is the
store's doing.

Figures (epochs after the first; Ray's start-up is reported on its own):
- throughput ratio = plain epoch time / platform epoch time, where the platform's epoch is the wall
  time between two of its epoch lines, so it includes ``ray.train.report`` and the checkpoint
  (target >= 0.95); samples/s on ``epoch_s`` of history.csv (train + validation only) are shown too;
- that ratio split in two by a third arm, the plain loop run unchanged as the body of a one-worker
  ``TorchTrainer`` on a local Ray started as ``platform.run`` starts it: plain / plain-in-Ray-Train
  is what Ray's runtime costs (its own processes share the cores, the worker runs at niceness 15),
  plain-in-Ray-Train / platform is what the platform's code costs (its stream, metrics, report);
- the platform's own part split again by a fourth arm, ``platform/train/loop.py``'s epoch fed by the
  store's stream exactly as a worker reads it, in this process without Ray: plain / that arm is
  what the platform's code costs by itself (loop, seeding, metrics, stream, validation), and the
  rest of the platform's own part is what it costs inside Ray (report, checkpoint, the preemption
  watch, the worker's process);
- data feed alone: an epoch of the platform's input pipeline (the store's stream) without the model,
  in this process after the runs (explains part of a gap);
- checkpoint share of an epoch (target < 2%), two ways: (a) in this process, the median time to write
  what the worker writes every epoch (``torch.save`` of ``TrainState.state_dict()`` plus config and
  meta, in a temporary folder) and to copy it into run storage as Ray Train's report does, over the
  plain loop's epoch time; (b) in the real run, the wall time between epoch lines minus ``epoch_s``
  (report, checkpoint, persisting and the progress line together), over the platform's epoch; the
  worker's lines are stamped when they reach this process through Ray's log forwarding, whose
  jitter is of the same order, so (b) is a check on (a) and can come out below zero.

Ray starts its workers at niceness 15 (``RAY_worker_niceness``), so on a machine busy with other
work the Train worker yields the CPU while the plain loop (niceness 0) does not.
``--ray-worker-niceness 0`` runs the platform's workers at the plain loop's priority, to tell that
apart from the platform's own overhead.

The last line is one JSON object of the headline ratios: ``platform_vs_plain`` (the target's),
``ray_runtime``, ``platform_own``, ``code_alone`` and ``checkpoint_share``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from bench import plain_loop
from bench.common import (
    child_env,
    median,
    parse_setting,
    print_summary,
    require_success,
    run_timed,
)
from platform import config as config_lib
from platform import registry
from platform.data import ingest, stream
from platform.train import loop
from platform.train.checkpoints import STATE_FILE
from platform.train.exact import seed_everything
from platform.train.loop import TrainState

SETTINGS = {"small": ("fast", 4, 1), "full": ("standard", 4, 3)}
"""Tier, epochs a run, rounds of the arms (the machine's speed drifts: see the README)."""
CHECKPOINT_REPEATS = 5
FEED_EPOCHS = 3
RUN_NAME = "bench"


def plain_epochs(cfg, train_set, val_set, meta) -> tuple[list[float], plain_loop.PlainRun]:
    """Per-epoch seconds after the first (which pays for allocator and thread-pool warm-up)."""
    run = plain_loop.new_run(cfg, meta)
    plain_loop.train(run, train_set, val_set, cfg)
    return run.epoch_seconds[1:], run


def checkpoint_seconds(run: plain_loop.PlainRun, cfg, meta: dict, storage: Path) -> float:
    """Median time to write the worker's checkpoint and copy it into storage (platform/train/worker.py's
    ``_report``; with local storage Ray Train persists by copying the folder)."""
    state = TrainState(
        run.model,
        run.optimizer,
        run.scheduler,
        torch.amp.GradScaler("cpu", enabled=False),
        epoch=cfg.epochs,
        history=[{"val/acc": acc} for acc in run.val_acc],
    )
    classes = len(meta["classes"])
    extras = {"confusion_matrix": [[0] * classes for _ in range(classes)]}
    timings = []
    for attempt in range(CHECKPOINT_REPEATS):
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="checkpoint-") as directory:
            torch.save({**state.state_dict(), "extras": extras}, Path(directory) / STATE_FILE)
            (Path(directory) / "config.json").write_text(json.dumps(config_lib.to_dict(cfg), indent=2))
            (Path(directory) / "meta.json").write_text(json.dumps(meta, indent=2))
            shutil.copytree(directory, storage / f"epoch_{attempt:04d}")
        timings.append(time.perf_counter() - started)
    return median(timings)


@contextlib.contextmanager
def local_ray():
    """A local Ray started as ``platform.run`` starts it, in this process; a new one each time."""
    import ray

    from platform import cluster

    os.environ.pop("RAY_ADDRESS", None)  # a new local instance, like the platform's child (child_env)
    cluster.start()
    try:
        yield
    finally:
        ray.shutdown()
        os.environ.pop("RAY_ADDRESS", None)  # cluster.start pointed it at the instance now gone


def plain_in_ray_train(tier: str, epochs: int, storage: Path) -> list[float]:
    """Per-epoch seconds (after the first) of bench/plain_loop.py run as the body of a Ray Train
    worker with the platform's resources: Ray's runtime around it, none of the platform's code."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from platform.cluster import default_cpus_per_worker

    storage.mkdir(parents=True)
    trainer = TorchTrainer(
        _plain_loop_worker,
        train_loop_config={"tier": tier, "epochs": epochs, "out": str(storage / "epoch_seconds.json")},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": default_cpus_per_worker(1)}),
        run_config=ray.train.RunConfig(name="plain-in-ray-train", storage_path=str(storage)),
    )
    trainer.fit()
    return json.loads((storage / "epoch_seconds.json").read_text())


def _plain_loop_worker(config: dict) -> None:
    """Writes its epoch times to ``config["out"]``: a local Ray, so the worker shares this disk."""
    cfg = plain_loop.resolve_config(config["tier"], config["epochs"])
    epoch_seconds, _run = plain_epochs(cfg, *plain_loop.load_data(cfg))
    Path(config["out"]).write_text(json.dumps(epoch_seconds))


def train_stream(splits: dict, cfg, epoch: int):
    """One rank's (batch, store ids, position) of the epoch, as ``platform/train/worker.py`` reads them."""
    order = {"seed": cfg.seed, "batch_size": cfg.batch_size, "bucket": cfg.bucket_by_length}
    shards_per_window = max(1, cfg.shuffle_buffer // cfg.shard_rows)
    return stream.prefetched(
        stream.rank_batches(splits["train"], rank=0, world=1, epoch=epoch, shards_per_window=shards_per_window, **order)
    )


def data_feed_seconds(splits: dict, cfg) -> float:
    """Median seconds of an epoch (after the first) of the platform's input pipeline alone: the
    store's stream of one rank's batches and the validation split, no model. A lower bound of what
    feeding costs in the worker, which reads the same shards beside its training threads."""
    timings = []
    for epoch in range(FEED_EPOCHS):
        started = time.perf_counter()
        for _batch in train_stream(splits, cfg, epoch):
            pass
        for _batch in stream.split_batches(splits["val"], cfg.batch_size):
            pass
        timings.append(time.perf_counter() - started)
    return median(timings[1:])


def loop_in_process(splits: dict, cfg, meta: dict) -> list[float]:
    """Per-epoch seconds (after the first) of ``platform/train/loop.py``'s epoch, train and validation,
    fed by the store's stream as a worker is, in this process: the platform's code without Ray."""
    trainable, device = registry.load("asl"), torch.device("cpu")
    seed_everything(cfg.seed)
    state = loop.new_state(trainable.build_model(cfg, meta), cfg, device)
    seconds = []
    for epoch in range(cfg.epochs):
        trainable.on_epoch_start(state.model, epoch, cfg)
        started = time.perf_counter()
        batches = ((batch, position) for batch, _ids, position in train_stream(splits, cfg, epoch))
        loop.run_epoch(trainable, state, batches, stream.split_batches(splits["val"], cfg.batch_size), cfg, device)
        seconds.append(time.perf_counter() - started)
    return seconds[1:]


def platform_run(tier: str, epochs: int, storage: Path, env: dict[str, str]) -> tuple[pd.DataFrame, list[float], float]:
    """history.csv, the wall seconds between epoch lines (epochs 2..N), and seconds to the first epoch."""
    command = ["-m", "platform.run", "asl", "--tier", tier, "--set", f"epochs={epochs}", "--set", "min_steps=0"]
    command += ["--storage", str(storage), "--name", RUN_NAME]
    run = run_timed(command, env, timeout=1800)
    require_success(run, "python -m platform.run")
    history = pd.read_csv(storage / "asl" / RUN_NAME / "history.csv")
    # Worker lines arrive prefixed by Ray's "(RayTrainWorker pid=...)".
    line_times = [t for t, line in run.lines if "[asl] epoch " in line]
    if len(line_times) != epochs or len(history) != epochs:
        raise SystemExit(f"expected {epochs} epochs, saw {len(line_times)} lines:\n{run.tail()}")
    walls = [later - earlier for earlier, later in itertools.pairwise(line_times)]
    first_epoch_start = line_times[0] - history["epoch_s"].iloc[0]
    return history, walls, first_epoch_start


@dataclass
class Round:
    """The arms run one after another, so that they see the machine at about the same speed."""

    plain_s: list[float]
    """Plain loop seconds an epoch (after the first)."""
    history: pd.DataFrame
    platform_walls: list[float]
    """Seconds between the platform's epoch lines: epochs 2..N, report and checkpoint included."""
    startup_s: float
    in_ray_train_s: list[float]
    """The plain loop's seconds an epoch (after the first) inside a Ray Train worker."""
    loop_s: list[float]
    """The platform's loop's seconds an epoch (after the first) in this process, without Ray."""

    def ratios(self) -> tuple[float, float, float, float]:
        """platform/plain, Ray's runtime, the platform's own, its code alone (the module docstring)."""
        plain_s, wall_s, in_ray_s = median(self.plain_s), median(self.platform_walls), median(self.in_ray_train_s)
        return plain_s / wall_s, plain_s / in_ray_s, in_ray_s / wall_s, plain_s / median(self.loop_s)


@dataclass
class Measured:
    rounds: list[Round]
    plain_val_acc: float
    checkpoint_s: float
    feed_s: float

    def pooled(self, field: str) -> list[float]:
        return [value for measured in self.rounds for value in getattr(measured, field)]


def ratio_row(values: list[float], what: str) -> str:
    rounds = f"; rounds {', '.join(f'{value:.3f}' for value in values)}" if len(values) > 1 else ""
    return f"{median(values):.3f} ({what}{rounds})"


def summary_rows(m: Measured, rows: int) -> list[tuple[str, str]]:
    epoch_s = [value for measured in m.rounds for value in measured.history["epoch_s"].tolist()[1:]]
    walls = m.pooled("platform_walls")  # aligned with epoch_s
    plain_s, wall_s, train_s, in_ray_s, loop_s = (
        median(values) for values in (m.pooled("plain_s"), walls, epoch_s, m.pooled("in_ray_train_s"), m.pooled("loop_s"))
    )
    between_s = median([wall - train for wall, train in zip(walls, epoch_s)])
    overall, runtime, own, alone = zip(*(measured.ratios() for measured in m.rounds))
    return [
        (
            "plain loop",
            (
                f"{rows / plain_s:8.1f} samples/s  ({plain_s:.2f}s an epoch, median of "
                f"{len(m.pooled('plain_s'))} epochs after the first in {len(m.rounds)} round(s))"
            ),
        ),
        ("platform (wall)", f"{rows / wall_s:8.1f} samples/s  ({wall_s:.2f}s between epoch lines)"),
        ("platform (epoch_s)", f"{rows / train_s:8.1f} samples/s  ({train_s:.2f}s train + validation)"),
        ("plain loop in Ray Train", f"{rows / in_ray_s:8.1f} samples/s  ({in_ray_s:.2f}s an epoch, as a one-worker TorchTrainer)"),
        ("platform loop, no Ray", f"{rows / loop_s:8.1f} samples/s  ({loop_s:.2f}s an epoch, the platform's loop fed by the store here)"),
        ("ratio platform/plain", ratio_row(list(overall), "wall, target >= 0.95")),
        ("  = Ray's runtime", ratio_row(list(runtime), "plain loop in Ray Train / plain loop")),
        ("  x platform's own", ratio_row(list(own), "platform / plain loop in Ray Train")),
        ("    of which its code", ratio_row(list(alone), "platform loop without Ray / plain loop")),
        (
            "checkpoint (a)",
            (f"{m.checkpoint_s * 1000:.0f} ms to write and persist = {m.checkpoint_s / plain_s:.2%} of an epoch (target < 2%)"),
        ),
        (
            "between epochs (b)",
            (
                f"{between_s * 1000:.0f} ms report + checkpoint + line = "
                f"{between_s / wall_s:.2%} of an epoch (± the jitter of Ray's log forwarding)"
            ),
        ),
        (
            "data feed alone",
            (
                f"{m.feed_s:.2f}s an epoch of the store's stream without the model = "
                f"{m.feed_s / plain_s:.1%} of a plain epoch (in this process: a lower bound)"
            ),
        ),
        (
            "Ray start-up",
            (f"{median([measured.startup_s for measured in m.rounds]):.1f}s from the command to the first epoch (not in the ratio)"),
        ),
        (
            "final val/acc",
            (
                f"plain {m.plain_val_acc:.3f}, platform {m.rounds[-1].history['val/acc'].iloc[-1]:.3f} "
                "(same model and steps; data order differs)"
            ),
        ),
    ]


def main() -> int:
    args = parse_setting(
        __doc__,
        [
            (
                "--ray-worker-niceness",
                {"type": int, "default": None, "help": "diagnostic: the niceness of the run's Ray workers (Ray's default is 15)"},
            )
        ],
    )
    tier, epochs, round_count = SETTINGS["full" if args.full else "small"]
    extra_env = {} if args.ray_worker_niceness is None else {"RAY_worker_niceness": str(args.ray_worker_niceness)}
    cfg = plain_loop.resolve_config(tier, epochs)
    train_set, val_set, meta = plain_loop.load_data(cfg)
    with local_ray():  # the store the platform's runs read (written once, then cached)
        splits, store_meta = ingest.prepare(registry.load("asl"), cfg, say=lambda line: None)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        scratch = Path(scratch)
        for index in range(round_count):
            plain_s, plain = plain_epochs(cfg, train_set, val_set, meta)
            history, walls, startup_s = platform_run(tier, epochs, scratch / f"runs-{index}", child_env(**extra_env))
            with local_ray():
                in_ray_train_s = plain_in_ray_train(tier, epochs, scratch / f"in-ray-train-{index}")
            rounds.append(Round(plain_s, history, walls, startup_s, in_ray_train_s, loop_in_process(splits, cfg, store_meta)))
        measured = Measured(rounds, plain.val_acc[-1], checkpoint_seconds(plain, cfg, meta, scratch), data_feed_seconds(splits, cfg))
    rows = len(train_set)
    overall, runtime, own, alone = (median(list(values)) for values in zip(*(r.ratios() for r in rounds)))
    print_summary(
        f"training overhead: asl tier {tier}, {epochs} epochs, {rows} training rows, "
        f"{plain_loop.steps_per_epoch(rows, cfg)} steps an epoch",
        summary_rows(measured, rows),
        headline={
            "platform_vs_plain": round(overall, 3),
            "ray_runtime": round(runtime, 3),
            "platform_own": round(own, 3),
            "code_alone": round(alone, 3),
            "checkpoint_share": round(measured.checkpoint_s / median(measured.pooled("plain_s")), 4),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
