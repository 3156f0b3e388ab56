"""The training loop, free of Ray: one epoch, validation, early stopping, checkpoint state.

Ray Train runs it through ``platform/train/worker.py`` (``python -m platform.run asl``); tests and
benchmarks call it directly. Everything a resumed run needs is in :meth:`TrainState.state_dict`,
including the position inside an epoch and the epoch's running metric sums, and the random
streams are re-seeded before every optimizer step (the rules are in ``platform/train/exact.py``), so a
run restarted from any checkpoint continues exactly as if it had never stopped (on CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from platform.contract import Trainable
from platform.errors import UserError
from platform.train.averaging import WeightAverage
from platform.train.exact import seed_everything, step_seed


def build_optimizer(model: torch.nn.Module, cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Any, steps_per_epoch: int = 1) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once an epoch, except ``linear_warmup``, stepped once an optimizer step (the
    fine-tuning recipe of BERT-like encoders); ``none`` is a constant schedule so every run has the
    same state."""
    eta_min = cfg.lr * cfg.min_lr_ratio
    if cfg.scheduler == "linear_warmup":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_warmup(steps_per_epoch * cfg.epochs, cfg))
    if cfg.scheduler == "cosine_restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=cfg.restart_period, T_mult=cfg.restart_mult, eta_min=eta_min
        )
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs), eta_min=eta_min)
    if cfg.scheduler == "none":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise UserError(f"config key 'scheduler' must be none, cosine, cosine_restarts or linear_warmup, not {cfg.scheduler!r}")


def _linear_warmup(total_steps: int, cfg: Any) -> Callable[[int], float]:
    """lr's share after ``step`` optimizer steps: 0 -> 1 over the warm-up, then down to min_lr_ratio."""
    warmup = max(1, round(total_steps * cfg.warmup_ratio)) if cfg.warmup_ratio > 0 else 0

    def share(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        remaining = max(0.0, 1 - (step - warmup) / max(1, total_steps - warmup))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * remaining

    return share


def steps_each_step(cfg: Any) -> bool:
    """Whether the schedule moves every optimizer step (else once an epoch)."""
    return cfg.scheduler == "linear_warmup"


def is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


@dataclasses.dataclass
class TrainState:
    """Model, optimizer and counters: what a checkpoint holds and a restart restores."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    epoch: int = 0
    """Epochs completed."""
    step: int = 0
    """Optimizer steps taken."""
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    restarts: int = 0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    position: int = 0
    """Samples of the current epoch already trained, over all ranks (0 between epochs)."""
    partial: dict[str, Any] = dataclasses.field(default_factory=lambda: {"totals": {}, "batches": 0})
    """This rank's running metric sums of the current epoch; a checkpoint holds every rank's."""
    average: WeightAverage | None = None
    """The weights' moving average (``ema_decay`` > 0): what is validated and kept as the best model."""

    def evaluated(self) -> torch.nn.Module:
        return self.average.module if self.average is not None else unwrap(self.model)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "early_stopping": {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs},
            "restarts": self.restarts,
            "history": self.history,
            "position": self.position,
            "partial": [self.partial],
            **({"average": self.average.state_dict()} if self.average is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any], rank: int = 0, world: int = 1) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = state["epoch"], state["step"]
        stopping = state["early_stopping"]
        self.best, self.best_epoch, self.bad_epochs = stopping["best"], stopping["best_epoch"], stopping["bad_epochs"]
        self.restarts = state["restarts"]
        self.history = list(state["history"])
        self.position = state.get("position", 0)
        self.partial = merged_partial(state.get("partial") or [], rank, world)
        if self.average is not None:
            self.average.load_state_dict(state["average"])

    def record(self, metrics: dict[str, float], metric: str, mode: str) -> bool:
        """Append an epoch's metrics; update early stopping. True when this epoch is the best."""
        self.history.append(metrics)
        if is_better(metrics[metric], self.best, mode):
            self.best, self.best_epoch, self.bad_epochs = metrics[metric], self.epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def should_stop(self, cfg: Any) -> bool:
        out_of_patience = cfg.patience > 0 and self.bad_epochs >= cfg.patience
        return out_of_patience or self.epoch >= cfg.epochs


def merged_partial(saved: list[dict], rank: int, world: int) -> dict[str, Any]:
    """This rank's running sums from a checkpoint's per-rank list: its own on the same worker
    count (bitwise), else all ranks' sums on rank 0 (the epoch's mean is still over every batch)."""
    empty = {"totals": {}, "batches": 0}
    if len(saved) == world:
        return {"totals": dict(saved[rank]["totals"]), "batches": saved[rank]["batches"]}
    if rank or not saved:
        return empty
    totals: dict[str, float] = {}
    for part in saved:
        for key, value in part["totals"].items():
            totals[key] = totals.get(key, 0.0) + value
    # The epoch's mean divides by the batches of one rank: scale so every batch counts once.
    return {
        "totals": {k: v * world / len(saved) for k, v in totals.items()},
        "batches": sum(p["batches"] for p in saved) * world // len(saved),
    }


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The user's module inside DistributedDataParallel, so checkpoints load anywhere."""
    return getattr(model, "module", model)


def new_state(model: torch.nn.Module, cfg: Any, device: torch.device, steps_per_epoch: int = 1) -> TrainState:
    """``steps_per_epoch``: optimizer steps an epoch, which a per-step schedule spreads itself over."""
    optimizer = build_optimizer(model, cfg)
    use_scaler = cfg.amp and device.type == "cuda"
    return TrainState(
        model=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg, steps_per_epoch),
        scaler=torch.amp.GradScaler(device.type, enabled=use_scaler),
        average=WeightAverage(unwrap(model), cfg.ema_decay) if cfg.ema_decay > 0 else None,
    )


def _autocast(cfg: Any, device: torch.device):
    if cfg.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _with_last(items: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    iterator = iter(items)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for following in iterator:
        yield current, False
        current = following
    yield current, True


def train_one_epoch(
    trainable: Trainable,
    state: TrainState,
    batches: Iterable[Any],
    cfg: Any,
    device: torch.device,
    *,
    rank: int = 0,
    after_step: Callable[[TrainState], None] | None = None,
) -> dict[str, float]:
    """One pass over ``batches`` with gradient accumulation and AMP; the epoch's mean metrics.

    Items are batches, or ``(batch, position)`` with the epoch's position after the global step
    (``platform/data/stream.py``); ``after_step(state)`` runs after each optimizer step, where a
    checkpoint holds no pending gradient. Every rank must see the same number of batches.
    """
    model, optimizer, scaler = state.model, state.optimizer, state.scaler
    model.train()
    totals, seen = state.partial["totals"], state.partial["batches"]
    optimizer.zero_grad(set_to_none=True)
    for index, (item, is_last) in enumerate(_with_last(batches), start=1):
        batch, position = item if isinstance(item, tuple) else (item, None)
        if index % cfg.grad_accum_steps == 1 or cfg.grad_accum_steps == 1:
            seed_everything(step_seed(cfg.seed, state.step, rank))
        # The step's last batch (a full group, or the epoch's remainder) all-reduces in DDP.
        is_step = index % cfg.grad_accum_steps == 0 or is_last
        sync = contextlib.nullcontext() if is_step or not hasattr(model, "no_sync") else model.no_sync()
        with sync, _autocast(cfg, device):
            loss, metrics = trainable.loss(model, _to_device(batch, device), cfg)
            _check_finite(loss, state, index)
            scaler.scale(loss / cfg.grad_accum_steps).backward()
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + float(value)
        seen += 1
        if is_step:
            _optimizer_step(state, cfg)
            state.partial = {"totals": totals, "batches": seen}
            if position is not None:
                state.position = position
            if after_step is not None and not is_last:
                after_step(state)
    return {f"train/{key}": total / max(seen, 1) for key, total in totals.items()}


def _check_finite(loss: torch.Tensor, state: TrainState, batch: int) -> None:
    """A NaN or infinite loss ends the run with the place it happened, before it reaches the
    weights (mixed precision's scaler skips its own overflow steps; a loss that is itself NaN is
    the model's or the data's)."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise UserError(
            f"the training loss is {value} in epoch {state.epoch + 1}, batch {batch} (after {state.step} "
            f"optimizer steps): lower lr, set grad_clip, or check the data"
        )


def _optimizer_step(state: TrainState, cfg: Any) -> None:
    if cfg.grad_clip > 0:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    if state.average is not None:
        state.average.update(unwrap(state.model))
    if steps_each_step(cfg):
        state.scheduler.step()


def validate(
    trainable: Trainable, model: torch.nn.Module, batches: Iterable[dict], cfg: Any, device: torch.device
) -> tuple[dict[str, float], dict[str, Any]]:
    """The trainable's metrics split into scalars (reported) and extras (a confusion matrix...). It
    evaluates the model itself, never its DDP wrapper (which would sync buffers across ranks)."""
    model = unwrap(model)
    model.eval()
    with torch.no_grad(), _autocast(cfg, device):
        results = trainable.evaluate(model, (_to_device(b, device) for b in batches), cfg)
    scalars = {k: float(v) for k, v in results.items() if np.ndim(v) == 0}
    extras = {k: np.asarray(v).tolist() for k, v in results.items() if np.ndim(v) > 0}
    return scalars, extras


def run_epoch(
    trainable: Trainable,
    state: TrainState,
    train_batches: Iterable[dict],
    val_batches: Iterable[dict],
    cfg: Any,
    device: torch.device,
    *,
    rank: int = 0,
    after_step: Callable[[TrainState], None] | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Train and validate epoch ``state.epoch + 1`` (from ``state.position`` when a checkpoint
    was taken inside it); returns its metrics and validation extras."""
    started = time.perf_counter()
    train_metrics = train_one_epoch(trainable, state, train_batches, cfg, device, rank=rank, after_step=after_step)
    lr = state.optimizer.param_groups[0]["lr"]  # the epoch's, or where a per-step schedule has reached
    val_metrics, extras = validate(trainable, state.evaluated(), val_batches, cfg, device)
    if not steps_each_step(cfg):
        state.scheduler.step()
    state.epoch += 1
    state.position, state.partial = 0, {"totals": {}, "batches": 0}
    metrics = {"epoch": state.epoch, "lr": lr, **train_metrics, **val_metrics}
    metrics["epoch_s"] = time.perf_counter() - started
    return metrics, extras
