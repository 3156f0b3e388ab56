"""ASL signs: isolated sign classification from MediaPipe landmarks (Kaggle "asl-signs").

Used by ``python -m platform.run asl [--tier fast] [--data DIR]`` (DIR holds ``train.csv`` and
``train_landmark_files/``), and by ``python -m platform.predict RUN_DIR seq.parquet ...``.

Features: 62 landmarks a frame (both hands, 21 each, and 20 face points), relative to the nose
and scaled by the eye distance, then position, velocity, acceleration and displacement since the
first sighting: 62 * 3 * 4 = 744 numbers a frame. Model: TCN -> BiLSTM -> self-attention ->
Conv1D and Transformer blocks -> masked mean pooling, with adaptive and late dropout and DropPath.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from platform.errors import UserError
from platform.runs.baseline import Constant, Trivial, prior_logits
from trainables.asl.config import METRIC, PREPROCESS_KEYS, Config  # noqa: F401 - the contract's names
from trainables.asl.landmarks import read_features, read_index
from trainables.asl.model import SignClassifier
from trainables.asl.synthetic import synthetic_dataset


def preprocess(batch: dict[str, np.ndarray], cfg: Config) -> dict:
    """Raw rows {path, label} -> {x: one [frames, 744] array a row, label}.

    ``x`` is a list, so the store keeps each sequence unpadded and batches get ``x_mask``; float16
    keeps features clipped to +-20 eye distances within 0.05% of their value.
    """
    return {
        "x": [read_features(str(path), cfg.max_len).astype(np.float16) for path in batch["path"]],
        "label": np.asarray(batch["label"], dtype=np.int64),
    }


def build_datasets(cfg: Config):
    """{path, label} rows by split (train and val) and meta; synthetic when no data_dir."""
    data_dir = cfg.data_dir or str(synthetic_dataset(cfg))
    splits, meta = read_index(data_dir, cfg.val_fraction, cfg.seed)
    if not splits["val"]:
        raise UserError(f"{data_dir}: too few sequences to hold out val_fraction={cfg.val_fraction}")
    return splits, meta


def build_model(cfg: Config, meta: dict) -> nn.Module:
    return SignClassifier(cfg, len(meta["classes"]))


def dropout_schedule(epoch: int, cfg: Config) -> tuple[float, float]:
    """(stage dropout, late dropout) at an epoch (from 0): the adaptive ramp and the late switch."""
    ramp = min(epoch / cfg.adaptive_dropout_epochs, 1.0) if cfg.adaptive_dropout_epochs > 0 else 1.0
    adaptive = cfg.adaptive_dropout_start + (cfg.adaptive_dropout_end - cfg.adaptive_dropout_start) * ramp
    return adaptive, cfg.late_dropout if epoch >= cfg.late_dropout_epoch else 0.0


def on_epoch_start(model: nn.Module, epoch: int, cfg: Config) -> None:
    model.stage_dropout.p, model.late_dropout.p = dropout_schedule(epoch, cfg)


# ---------------------------------------------------------------- loss, evaluation, prediction


def loss(model: nn.Module, batch: dict[str, torch.Tensor], cfg: Config):
    logits = model(batch["x"], batch["x_mask"])
    value = F.cross_entropy(logits, batch["label"], label_smoothing=cfg.label_smoothing)
    accuracy = (logits.argmax(dim=1) == batch["label"]).float().mean()
    return value, {"loss": value.item(), "acc": accuracy.item()}


def evaluate(model: nn.Module, batches, cfg: Config) -> dict:
    """Plain cross-entropy (no smoothing), accuracy, top-5 accuracy and the confusion matrix."""
    total = correct = top5 = 0
    loss_sum, confusion = 0.0, None
    for batch in batches:
        logits, labels = model(batch["x"], batch["x_mask"]).float(), batch["label"]
        classes = logits.shape[1]
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        predicted = logits.argmax(dim=1)
        correct += (predicted == labels).sum().item()
        top5 += (logits.topk(min(5, classes), dim=1).indices == labels[:, None]).any(dim=1).sum().item()
        counts = torch.bincount(labels * classes + predicted, minlength=classes * classes).cpu().numpy()
        confusion = counts.reshape(classes, classes) + (0 if confusion is None else confusion)
        total += len(labels)
    if total == 0:
        raise UserError("the validation split is empty")
    metrics = {"val/loss": loss_sum / total, "val/acc": correct / total, "confusion_matrix": confusion}
    if confusion.shape[0] >= 5:
        metrics["val/top5"] = top5 / total
    return metrics


def baseline(read, cfg: Config, meta: dict) -> Trivial:
    """The trivial predictor beside every metric: the training majority sign, as constant log class
    frequencies (so its val/loss is the class balance's cross-entropy), scored by :func:`evaluate`."""
    counts = np.zeros(len(meta["classes"]), dtype=np.int64)
    for batch in read("label"):
        counts += np.bincount(batch["label"].numpy(), minlength=len(counts))
    model = Constant(prior_logits(counts))
    share = counts.max() / max(counts.sum(), 1)
    return Trivial(
        f"majority class {meta['classes'][int(counts.argmax())]!r} ({share:.0%} of training rows)",
        lambda batches: evaluate(model, batches, cfg),
    )


def predict(model: nn.Module, inputs: list[str], cfg: Config, meta: dict) -> list[dict]:
    """Top-5 signs with probabilities for each landmark parquet file."""
    classes = meta["classes"]
    device = next(model.parameters()).device
    sequences = [read_features(str(path), cfg.max_len) for path in inputs]
    longest = max(len(s) for s in sequences)
    x = torch.zeros(len(sequences), longest, sequences[0].shape[1])
    for row, sequence in zip(x, sequences):
        row[: len(sequence)] = torch.from_numpy(sequence)
    mask = torch.arange(longest)[None, :] < torch.tensor([len(s) for s in sequences])[:, None]
    x, mask = x.to(device), mask.to(device)
    model.eval()
    with torch.inference_mode():
        probs = model(x, mask).float().softmax(dim=1).cpu()
    top = probs.topk(min(5, len(classes)), dim=1)
    return [
        {"input": str(path), "top": [{"label": classes[i], "prob": p} for p, i in zip(ps, idx)]}
        for path, ps, idx in zip(inputs, top.values.tolist(), top.indices.tolist())
    ]
