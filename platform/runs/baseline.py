"""A trivial baseline beside every metric: fitted once on the training split, scored like the model.

Used by ``python -m platform.run <stem>``: before training starts the driver fits the trainable's
trivial predictor and scores it on the validation and test splits; ``manifest.json`` keeps it under
``baseline``, the summary line prints ``val/bleu4 0.1400 (baseline 0.0900)``, ``python -m
platform.monitor`` shows it, the training curves draw it as a dashed line, and a run whose best
metric does not beat it ends with a ``warning:`` line.

A trainable says what "trivial" means for it with an optional hook::

    def baseline(read, cfg, meta) -> platform.runs.baseline.Trivial

``read("label", ...)`` streams batches of only those columns of the stored training split (so a
large feature column is never read for a label count). The platform never looks at the data: it
scores ``Trivial.score`` on each evaluation split exactly as it scores the model, under the same
metric names. A resumed run keeps the block its first attempt wrote (fitting it may be costly).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from platform.contract import Trainable
from platform.data import store, stream
from platform.runs.run_files import baseline_value
from platform.train.loop import is_better

EVALUATED_SPLITS = ("val", "test")


@dataclasses.dataclass
class Trivial:
    """A trainable's trivial predictor, already fitted on the training split."""

    predictor: str
    """One line saying what it is: ``majority class 'hello'``, ``mean 4.2``, ``caption 'a dog runs'``."""
    score: Callable[[Iterable[dict]], dict]
    """Its metrics over a split's batches, keyed as ``evaluate``'s (``val/...``); extras are dropped."""


class Constant(nn.Module):
    """A model whose output ignores its input: ``value`` (a tensor, or a dict of them) repeated for
    every row of the batch, so a trainable's own ``evaluate`` scores a constant prediction."""

    def __init__(self, value: torch.Tensor | dict[str, torch.Tensor]):
        super().__init__()
        self.value = value

    def forward(self, *inputs: Any) -> torch.Tensor | dict[str, torch.Tensor]:
        rows = _batch_rows(inputs)
        if isinstance(self.value, dict):
            return {key: value.expand(rows, *value.shape) for key, value in self.value.items()}
        return self.value.expand(rows, *self.value.shape)


def _batch_rows(inputs: Iterable[Any]) -> int:
    """The batch size: the first dimension of the first tensor among the inputs (or a dict's values)."""
    for item in inputs:
        tensors = item.values() if isinstance(item, dict) else [item]
        for tensor in tensors:
            if torch.is_tensor(tensor) and tensor.ndim:
                return int(tensor.shape[0])
    raise ValueError("a constant predictor needs a batched tensor among its inputs to know the batch size")


def prior_logits(counts: Iterable[int]) -> torch.Tensor:
    """Log class frequencies (add-one smoothed, so a class absent from training has a finite loss):
    their argmax is the majority class (the first on a tie, as ``argmax`` picks), their
    cross-entropy the loss of knowing only the class balance."""
    smoothed = torch.as_tensor(list(counts), dtype=torch.float64) + 1.0
    return (smoothed / smoothed.sum()).log().float()


def train_columns(split: store.Split, columns: Iterable[str], batch_size: int) -> Iterator[dict]:
    """Batches of only ``columns`` of a stored split, in store order (parquet reads just their pages)."""
    names = list(columns)
    unknown = [name for name in names if name not in split.specs]
    if unknown:
        raise KeyError(f"the stored split has no column {unknown[0]!r} (it has {', '.join(split.specs)})")
    specs = {name: split.specs[name] for name in names}
    fs, root = store.filesystem(split.uri)
    for shard in split.manifest["shards"]:
        table = pq.read_table(store.join(root, shard["file"]), columns=names, filesystem=fs)
        window = stream.Window(specs, [table], np.arange(table.num_rows))
        for start in range(0, len(window), batch_size):
            yield stream.collate([(window, np.arange(start, min(start + batch_size, len(window))))])


def fit(trainable: Trainable, cfg: Any, splits: dict[str, store.Split], meta: dict) -> dict | None:
    """The ``baseline`` block: the trainable's trivial predictor scored on val and test; None when
    the trainable has no ``baseline`` hook."""
    hook = trainable.baseline
    if hook is None:
        return None
    trivial = hook(lambda *columns: train_columns(splits["train"], columns, cfg.batch_size), cfg, meta)
    block: dict[str, Any] = {"predictor": trivial.predictor}
    for name in EVALUATED_SPLITS:
        if name in splits:
            block[name] = score(trivial, stream.split_batches(splits[name], cfg.batch_size), name)
    return block


def score(trivial: Trivial, batches: Iterable[dict], split: str) -> dict[str, float]:
    """The scalars of ``trivial.score``, keyed ``<split>/...`` as the model's are in the manifest."""
    with torch.no_grad():
        results = trivial.score(batches)
    return {key.replace("val/", f"{split}/", 1): float(value) for key, value in results.items() if np.ndim(value) == 0}


def of_run(trainable: Trainable, cfg: Any, splits: dict[str, store.Split], meta: dict, saved: dict | None) -> dict | None:
    """A resumed run's saved block, else a freshly fitted one."""
    return saved if saved is not None else fit(trainable, cfg, splits, meta)


def shown(block: dict | None, metric: str, split: str = "val") -> str:
    """`` (baseline 0.0900)`` to follow a metric's value, or nothing without a baseline."""
    found = baseline_value(block, metric, split)
    return f" (baseline {found:.4f})" if found is not None else ""


def describe(stem: str, block: dict | None, metric: str) -> str:
    """The line a run prints once the baseline is fitted."""
    if block is None:
        return f"[{stem}] baseline: none ({stem} has no baseline hook)"
    found = baseline_value(block, metric)
    return f"[{stem}] baseline: {block['predictor']}: {metric} " + (f"{found:.4f}" if found is not None else "not scored")


def warning(stem: str, block: dict | None, metric: str, mode: str, best: float) -> str | None:
    """A ``warning:`` line when the run's best metric does not beat its trivial baseline."""
    trivial = baseline_value(block, metric)
    if trivial is None or is_better(best, trivial, mode):
        return None
    return (
        f"warning: [{stem}] the best {metric} {best:.4f} does not beat the trivial baseline's {trivial:.4f} "
        f"({block['predictor']}): the model is no better than a constant prediction"
    )


def warn(stem: str, block: dict | None, metric: str, mode: str, best: float) -> None:
    line = warning(stem, block, metric, mode, best)
    if line:
        print(line, file=sys.stderr, flush=True)
