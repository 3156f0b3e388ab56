"""The baseline: ASL trained the seed's way, a plain PyTorch script (tensors, DataLoader, AdamW), no Ray.

    .venv/bin/python -m bench.plain_loop --tier smoke

Used by bench/train_overhead.py (in process) and bench/startup.py (as this command: it prints
``stage <name>`` as each start-up stage ends, up to the first training step, and the caller stamps
the lines). It reads the same synthetic set and builds the same model and config as
``python -m platform.run asl --tier T --set epochs=N``.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from platform import registry
from trainables import asl
from trainables.asl.landmarks import extract_features, read_index
from trainables.asl.synthetic import synthetic_dataset


def resolve_config(tier: str, epochs: int) -> Any:
    """The config ``platform.run asl --tier <tier> --set epochs=<epochs> --set min_steps=0`` trains
    with: exactly ``epochs`` epochs (a tier's ``min_steps`` would lengthen the platform's run)."""
    return registry.resolve("asl", tier, [f"epochs={epochs}", "min_steps=0"])


def load_split(rows: list[dict], max_len: int) -> TensorDataset:
    pairs = [extract_features(row["path"], max_len) for row in rows]
    x = torch.from_numpy(np.stack([p[0] for p in pairs]))
    mask = torch.from_numpy(np.stack([p[1] for p in pairs]))
    return TensorDataset(x, mask, torch.tensor([row["label"] for row in rows]))


def load_data(cfg: Any) -> tuple[TensorDataset, TensorDataset, dict]:
    splits, meta = read_index(str(synthetic_dataset(cfg)), cfg.val_fraction, cfg.seed)
    return load_split(splits["train"], cfg.max_len), load_split(splits["val"], cfg.max_len), meta


@dataclass
class PlainRun:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    epoch_seconds: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)


def new_run(cfg: Any, meta: dict) -> PlainRun:
    torch.manual_seed(cfg.seed)
    model = asl.build_model(cfg, meta)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs), eta_min=cfg.lr * cfg.min_lr_ratio)
    return PlainRun(model, optimizer, scheduler)


def train_step(run: PlainRun, x: torch.Tensor, mask: torch.Tensor, label: torch.Tensor, cfg: Any) -> None:
    loss = F.cross_entropy(run.model(x, mask), label, label_smoothing=cfg.label_smoothing)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()


def validate(run: PlainRun, val: DataLoader) -> float:
    run.model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, mask, label in val:
            correct += (run.model(x, mask).argmax(dim=1) == label).sum().item()
            total += len(label)
    return correct / max(total, 1)


def train(run: PlainRun, train_set: TensorDataset, val_set: TensorDataset, cfg: Any) -> None:
    """``cfg.epochs`` epochs of training and validation, each timed like the platform's ``epoch_s``."""
    train_batches = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True)
    val_batches = DataLoader(val_set, batch_size=cfg.batch_size)
    for epoch in range(cfg.epochs):
        started = time.perf_counter()
        # The trainable's dropout schedule: the same network the platform trains, epoch by epoch.
        asl.on_epoch_start(run.model, epoch, cfg)
        run.model.train()
        for x, mask, label in train_batches:
            train_step(run, x, mask, label, cfg)
        run.val_acc.append(validate(run, val_batches))
        run.scheduler.step()
        run.epoch_seconds.append(time.perf_counter() - started)


def steps_per_epoch(train_rows: int, cfg: Any) -> int:
    return math.ceil(train_rows / cfg.batch_size)


def stage(name: str) -> None:
    print(f"stage {name}", flush=True)


def main() -> None:
    """Start-up by stage, as bench/startup.py reads it: imports, data, model, first step."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tier", default="smoke")
    args = parser.parse_args()
    stage("imports")
    cfg = resolve_config(args.tier, epochs=1)
    train_set, _val_set, meta = load_data(cfg)
    stage("data")
    run = new_run(cfg, meta)
    stage("model")
    x, mask, label = next(iter(DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True)))
    run.model.train()
    train_step(run, x, mask, label, cfg)
    stage("first_step")


if __name__ == "__main__":
    main()
