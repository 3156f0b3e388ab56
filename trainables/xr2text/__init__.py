"""XR2Text: chest X-ray report generation (IU X-Ray / Open-i), with a four-stage curriculum.

Used by ``python -m platform.run xr2text [--tier fast] [--data DIR]`` (DIR in the Open-i layout
or with R2Gen's ``annotation.json``, see ``trainables/xr2text/data.py``), and by
``python -m platform.predict RUN_DIR chest.png [more.png ...] [--beam 3]``.

Model: a CNN (``image_weights``: ResNet18 from the torch hub cache, else the packaged
EfficientNet-Lite0, see ``trainables/image_encoders.py``) turns the image into a grid of visual
tokens; a Transformer decoder writes the report word by word (teacher forcing in training,
greedy or beam search with a length penalty in evaluation, ``trainables/textgen.py``). Vocabulary: the
training reports' words (lowercased, punctuation split).
Curriculum: each study has a stage (0 normal, 1 one finding, 2 several, 3 complex) from its MeSH
headings (else keywords); epoch e trains on the stages ``curriculum_epochs`` unlocked by e.
``METRIC`` is BLEU-4 + ROUGE-L on the validation split (pycocoevalcap), as the seed chose its best model;
CIDEr-D, the share of distinct reports and the words used are reported beside them, and a run whose
reports collapse to a few for every study ends with a ``warning:`` line (``run_warnings``).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from platform.errors import UserError
from trainables.image_encoders import chosen, resolve
from trainables.text_metrics import collapse_warnings, text_metrics
from trainables.xr2text import data, reports
from trainables.xr2text.config import METRIC, PREPROCESS_KEYS, Config  # noqa: F401 - the contract's names
from trainables.xr2text.model import ReportGenerator, describe_encoder
from trainables.xr2text.synthetic import synthetic_dataset
from trainables.xr2text.trivial import best_report


def read_splits(data_dir: str, cfg: Config) -> tuple[dict[str, list[dict]], dict]:
    """Studies by split (empty ones dropped) and meta with the training vocabulary, without Ray."""
    studies, meta = data.read_studies(data_dir, cfg.complex_min_findings)
    splits = data.split_studies(studies, cfg.val_fraction, cfg.test_fraction, cfg.seed, cfg.max_studies)
    for required in ("train", "val"):
        if not splits[required]:
            raise UserError(f"{data_dir}: the {required} split has no usable study")
    meta["skipped"]["empty_split"] = sum(not split for split in splits.values())
    data.warn_skipped(meta["skipped"])
    splits = {name: split for name, split in splits.items() if split}
    encoder = resolve(cfg.image_weights)
    meta.update(
        vocab=reports.build_vocab([s["report"] for s in splits["train"]], cfg.vocab_size, cfg.min_word_count),
        image_weights=encoder.identity,
        image_encoder=describe_encoder(encoder, cfg.encoder_stages),
        split_sizes={name: len(split) for name, split in splits.items()},
        stages={name: np.bincount([s["stage"] for s in split], minlength=4).tolist() for name, split in splits.items()},
    )
    return splits, meta


def build_datasets(cfg: Config):
    """{image_path, tokens, reference, id, stage} rows by split, and meta."""
    splits, meta = read_splits(cfg.data_dir or str(synthetic_dataset(cfg)), cfg)
    index = {word: i for i, word in enumerate(meta["vocab"])}
    sys.stdout.write(
        f"[xr2text] {meta['image_encoder']}; vocabulary {len(index)} words; train studies by stage {meta['stages']['train']}\n"
    )
    return {name: data.rows_of(split, index, cfg.max_tokens) for name, split in splits.items()}, meta


def preprocess(batch: dict[str, np.ndarray], cfg: Config) -> dict[str, np.ndarray]:
    """Raw rows -> {image uint8 [B, 1, S, S], tokens, reference, id, stage}: only images change."""
    size = cfg.image_size
    images = [data.load_image(str(path), size) for path in batch["image_path"]]
    return {
        "image": np.stack(images) if images else np.zeros((0, 1, size, size), np.uint8),
        **{key: np.stack(list(batch[key])) if len(batch[key]) else np.asarray(batch[key]) for key in ("tokens", "reference", "id")},
        "stage": np.asarray(batch["stage"], dtype=np.int64),
    }


def build_model(cfg: Config, meta: dict) -> nn.Module:
    return ReportGenerator(cfg, meta["vocab"], chosen(meta, cfg.image_weights))


# ---------------------------------------------------------------- curriculum


def epoch_schedule(epoch: int, cfg: Config) -> dict[str, int]:
    """The highest unlocked stage at an epoch (from 0): 3 (everything) when the curriculum is off."""
    if not cfg.curriculum:
        return {"stage": 3}
    return {"stage": sum(epoch >= start for start in cfg.curriculum_epochs)}


def train_filter(batch: dict[str, torch.Tensor], schedule: dict, cfg: Config) -> torch.Tensor:
    return batch["stage"] <= schedule["stage"]


# ---------------------------------------------------------------- loss, evaluation, prediction


def _token_loss(model: nn.Module, batch: dict[str, torch.Tensor], smoothing: float) -> torch.Tensor:
    logits = model(batch["image"], batch["tokens"]).float()
    target = batch["tokens"][:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=reports.PAD_ID, label_smoothing=smoothing)


def loss(model: nn.Module, batch: dict[str, torch.Tensor], cfg: Config):
    value = _token_loss(model, batch, cfg.label_smoothing)
    return value, {"loss": value.item()}


def caption_metrics(references: list[str], predictions: list[str]) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L, CIDEr-D, distinct share and vocabulary (``trainables/text_metrics.py``)
    of space-separated texts, one reference each, and ``METRIC``'s sum BLEU-4 + ROUGE-L."""
    metrics = text_metrics([[reference] for reference in references], predictions)
    metrics["val/bleu4_rouge_l"] = metrics["val/bleu4"] + metrics["val/rouge_l"]
    return metrics


def evaluate(model: nn.Module, batches, cfg: Config) -> dict:
    """val/loss (teacher forced), BLEU-1..4, ROUGE-L, their METRIC sum, CIDEr-D, distinct share,
    vocabulary, and every study's prediction."""
    rows, loss_sum, loss_batches = [], 0.0, 0
    for batch in batches:
        loss_sum += _token_loss(model, batch, 0.0).item()
        loss_batches += 1
        generated = model.generate(batch["image"], cfg.beam_width, cfg.length_penalty).cpu()
        for ids, reference, study_id in zip(generated, batch["reference"].cpu(), batch["id"].cpu()):
            rows.append(
                {
                    "id": reports.from_bytes(study_id),
                    "reference": reports.from_bytes(reference),
                    "prediction": reports.decode(ids, model.vocab),
                }
            )
    if not rows:
        raise UserError("the validation split is empty")
    metrics = caption_metrics([r["reference"] for r in rows], [r["prediction"] for r in rows])
    return {"val/loss": loss_sum / loss_batches, **metrics, "predictions": rows}


def baseline(read, cfg: Config, meta: dict):
    """The trivial predictor beside every metric: the best training report for every study (``trivial.py``)."""
    return best_report(read, cfg.seed, caption_metrics)


def run_warnings(manifest: dict) -> list[str]:
    """What the platform prints as ``warning:`` lines when a run ends: reports that collapsed to a
    few for every study, on the best epoch's validation split or on the test split."""
    metrics = {**manifest.get("best_metrics", {}), **manifest.get("test_metrics", {})}
    sizes = manifest.get("data", {}).get("split_sizes", {})
    return collapse_warnings(metrics, {split: sizes.get(split, 0) for split in ("val", "test")}, "reports")


def add_predict_arguments(parser) -> None:
    parser.add_argument("--beam", type=int, default=None, metavar="K", help="beam search width (1: greedy); default: the run's beam_width")


def predict(model: nn.Module, inputs: list[str], cfg: Config, meta: dict, beam: int | None = None) -> list[dict]:
    """A report for each chest X-ray image."""
    if not inputs:
        raise UserError("xr2text predicts from images: IMAGE [IMAGE ...]")
    width = beam or cfg.beam_width
    if width < 1:
        raise UserError(f"--beam must be at least 1, not {width}")
    device = next(model.parameters()).device
    images = torch.from_numpy(np.stack([data.load_image(str(p), cfg.image_size) for p in inputs])).to(device)
    model.eval()
    generated = model.generate(images, width, cfg.length_penalty).cpu()
    return [{"input": str(path), "report": reports.decode(ids, model.vocab)} for path, ids in zip(inputs, generated)]
