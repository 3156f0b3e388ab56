"""The training loop, free of Ray: one epoch, validation, early stopping, checkpoint state.

Ray Train runs it through ``platform/worker.py`` (``python -m platform.run asl``); tests and
benchmarks call it directly. Everything a resumed run needs is in :meth:`TrainState.state_dict`,
and every random stream is re-seeded from ``(seed, epoch, rank)`` at the start of each epoch, so a
run restarted from any checkpoint continues exactly as if it had never stopped (on CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A seed per (run seed, epoch, rank); large primes keep the streams apart."""
    return (seed * 1_000_003 + epoch * 10_007 + rank * 101) % 2**31


def build_optimizer(model: torch.nn.Module, cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Any) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once an epoch; ``none`` is a constant schedule so every run has the same state."""
    eta_min = cfg.lr * cfg.min_lr_ratio
    if cfg.scheduler == "cosine_restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=cfg.restart_period, T_mult=cfg.restart_mult, eta_min=eta_min
        )
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs), eta_min=eta_min)
    if cfg.scheduler == "none":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    from platform.errors import UserError

    raise UserError(f"config key 'scheduler' must be none, cosine or cosine_restarts, not {cfg.scheduler!r}")


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
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = state["epoch"], state["step"]
        stopping = state["early_stopping"]
        self.best, self.best_epoch, self.bad_epochs = stopping["best"], stopping["best_epoch"], stopping["bad_epochs"]
        self.restarts = state["restarts"]
        self.history = list(state["history"])

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


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The user's module inside DistributedDataParallel, so checkpoints load anywhere."""
    return getattr(model, "module", model)


def new_state(model: torch.nn.Module, cfg: Any, device: torch.device) -> TrainState:
    optimizer = build_optimizer(model, cfg)
    use_scaler = cfg.amp and device.type == "cuda"
    return TrainState(
        model=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg),
        scaler=torch.amp.GradScaler(device.type, enabled=use_scaler),
    )


def _autocast(cfg: Any, device: torch.device):
    if cfg.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def train_one_epoch(
    trainable: ModuleType, state: TrainState, batches: Iterable[dict], cfg: Any, device: torch.device
) -> dict[str, float]:
    """One pass over ``batches`` with gradient accumulation and AMP; the epoch's mean metrics."""
    model, optimizer, scaler = state.model, state.optimizer, state.scaler
    model.train()
    totals: dict[str, float] = {}
    seen = 0
    optimizer.zero_grad(set_to_none=True)
    for index, batch in enumerate(batches, start=1):
        is_step = index % cfg.grad_accum_steps == 0
        # DDP must not all-reduce on the batches whose gradients only accumulate.
        sync = contextlib.nullcontext() if is_step or not hasattr(model, "no_sync") else model.no_sync()
        with sync, _autocast(cfg, device):
            loss, metrics = trainable.loss(model, _to_device(batch, device), cfg)
            scaler.scale(loss / cfg.grad_accum_steps).backward()
        if is_step:
            _optimizer_step(state, cfg)
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + float(value)
        seen += 1
    if seen % cfg.grad_accum_steps:
        _optimizer_step(state, cfg)
    return {f"train/{key}": total / max(seen, 1) for key, total in totals.items()}


def _optimizer_step(state: TrainState, cfg: Any) -> None:
    if cfg.grad_clip > 0:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1


def validate(
    trainable: ModuleType, model: torch.nn.Module, batches: Iterable[dict], cfg: Any, device: torch.device
) -> tuple[dict[str, float], dict[str, Any]]:
    """The trainable's metrics split into scalars (reported) and extras (a confusion matrix...)."""
    model.eval()
    with torch.no_grad(), _autocast(cfg, device):
        results = trainable.evaluate(model, (_to_device(b, device) for b in batches), cfg)
    scalars = {k: float(v) for k, v in results.items() if np.ndim(v) == 0}
    extras = {k: np.asarray(v).tolist() for k, v in results.items() if np.ndim(v) > 0}
    return scalars, extras


def keep_rows(batches: Iterable[dict], keep: Any, batch_size: int) -> Iterator[dict]:
    """``batches`` with only the rows where ``keep(batch)`` is true, regrouped into full batches,
    so a curriculum samples from its unlocked rows at the configured batch size."""
    pending: list[dict] = []
    pending_rows = 0
    for batch in batches:
        mask = torch.as_tensor(keep(batch), dtype=torch.bool)
        if not mask.any():
            continue
        pending.append({key: value[mask] for key, value in batch.items()})
        pending_rows += int(mask.sum())
        while pending_rows >= batch_size:
            merged = {key: torch.cat([part[key] for part in pending]) for key in pending[0]}
            yield {key: value[:batch_size] for key, value in merged.items()}
            pending = [{key: value[batch_size:] for key, value in merged.items()}]
            pending_rows -= batch_size
    if pending_rows:
        yield {key: torch.cat([part[key] for part in pending]) for key in pending[0]}


def run_epoch(
    trainable: ModuleType,
    state: TrainState,
    train_batches: Iterable[dict],
    val_batches: Iterable[dict],
    cfg: Any,
    device: torch.device,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Train and validate epoch ``state.epoch + 1``; returns its metrics and validation extras."""
    started = time.perf_counter()
    lr = state.optimizer.param_groups[0]["lr"]
    train_metrics = train_one_epoch(trainable, state, train_batches, cfg, device)
    val_metrics, extras = validate(trainable, state.model, val_batches, cfg, device)
    state.scheduler.step()
    state.epoch += 1
    metrics = {"epoch": state.epoch, "lr": lr, **train_metrics, **val_metrics}
    metrics["epoch_s"] = time.perf_counter() - started
    return metrics, extras
