"""XR2Text: chest X-ray report generation (IU X-Ray / Open-i), with a four-stage curriculum.

Used by ``python -m platform.run xr2text [--tier fast] [--data DIR]`` (DIR in the Open-i layout
or with R2Gen's ``annotation.json``, see ``trainables/xr2text/data.py``), and by
``python -m platform.predict RUN_DIR chest.png [more.png ...] [--beam 3]``.

Model: a CNN (``image_weights``: ResNet18 from the torch hub cache, else the packaged
EfficientNet-Lite0, see ``trainables/image_encoders.py``) turns the image into a grid of visual
tokens; a Transformer decoder writes the report word by word (teacher forcing in training,
greedy or beam search with a length penalty in evaluation, ``trainables/textgen.py``). Vocabulary: the training reports' words (lowercased, punctuation split).
Curriculum: each study has a stage (0 normal, 1 one finding, 2 several, 3 complex) from its MeSH
headings (else keywords); epoch e trains on the stages ``curriculum_epochs`` unlocked by e.
``METRIC`` is BLEU-4 + ROUGE-L on the validation split (pycocoevalcap), as the seed chose its best model;
CIDEr-D, the share of distinct reports and the words used are reported beside them, and a run whose
reports collapse to a few for every study ends with a ``warning:`` line (``run_warnings``).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from platform.config import TrainConfig
from platform.errors import UserError
from trainables.image_encoders import chosen, resolve
from trainables.text_metrics import collapse_warnings, text_metrics
from trainables.xr2text import data, reports
from trainables.xr2text.trivial import best_report
from trainables.xr2text.model import ReportGenerator, describe_encoder
from trainables.xr2text.synthetic import synthetic_dataset

METRIC = ("val/bleu4_rouge_l", "max")
PREPROCESS_KEYS = ("image_size",)


@dataclasses.dataclass
class Config(TrainConfig):
    """The seed's full recipe; tiers in ``search_spaces/xr2text.py`` shrink it."""

    # The seed's training recipe, where it differs from the platform's defaults (documented there).
    epochs: int = 50
    batch_size: int = 4
    lr: float = 1e-4
    grad_accum_steps: int = 8
    grad_clip: float = 1.0
    patience: int = 999
    checkpoint_every: int = 5
    keep_checkpoints: int = 0
    image_size: int = 224
    """Images are resized to this many pixels square (grayscale)."""
    image_weights: str = "auto"
    """Image encoder: auto (ResNet18 from the torch hub cache, else EfficientNet-Lite0 from its package), resnet18, efficientnet_lite0, none (random ResNet18), or a .pth path."""
    encoder_stages: int = 4
    """Encoder stages kept (1-4, ending at strides 4-32; channels ResNet18 64-512, EfficientNet-Lite0 24/40/112/1280): fewer is a smaller encoder with a finer grid of visual tokens."""
    d_model: int = 512
    """Width of the visual tokens and of the decoder."""
    heads: int = 8
    """Attention heads of the decoder (d_model must be divisible by it)."""
    decoder_layers: int = 3
    """Transformer decoder layers."""
    dropout: float = 0.1
    """Dropout inside the decoder."""
    label_smoothing: float = 0.0
    """Label smoothing of the training cross-entropy."""
    max_tokens: int = 60
    """Report words kept as the target (longer reports are cut) and the longest generated report."""
    vocab_size: int = 2000
    """Largest vocabulary (specials included), the most frequent training words."""
    min_word_count: int = 3
    """Training words seen fewer times become <unk>."""
    beam_width: int = 3
    """Beam search width in evaluation (1: greedy); predict's --beam overrides it."""
    length_penalty: float = 1.0
    """GNMT length penalty alpha of beam search: scores are divided by ((5 + length) / 6) ** alpha; 0 favours short reports."""
    curriculum: bool = True
    """Curriculum learning: train on the unlocked stages only; off trains on every study from epoch 0."""
    curriculum_epochs: tuple[int, ...] = (5, 15, 30)
    """Epochs (from 0) at which stages 1 (one finding), 2 (several) and 3 (complex) unlock."""
    complex_min_findings: int = 3
    """Findings from which a study is stage 3 (complex multi-pathology)."""
    val_fraction: float = 0.1
    """Share of the studies held out for validation when the data has no split (a seeded shuffle)."""
    test_fraction: float = 0.2
    """Share held out for the test split (scored once after training) when the data has no split."""
    max_studies: int = 0
    """Studies used, a seeded sample taken before the split; 0: all."""
    synthetic_studies: int = 1000
    """Synthetic set (no data_dir): number of studies."""
    synthetic_image_size: int = 224
    """Synthetic set: image side in pixels."""

    LIMITS: ClassVar[dict] = {
        "image_size": (16, None),  # the encoders downsample 32x; smaller images leave them nothing to see
        "encoder_stages": (1, 4),  # both encoders have four (trainables/image_encoders.py)
        "d_model": (1, None), "heads": (1, None), "decoder_layers": (1, None), "dropout": (0, 0.99),
        "label_smoothing": (0, 0.99), "max_tokens": (1, None),
        "vocab_size": (5, None),  # the 4 special tokens and at least one word
        "min_word_count": (1, None), "beam_width": (1, None), "length_penalty": (0, 5),
        "complex_min_findings": (1, None),
        "val_fraction": (0.01, 0.9), "test_fraction": (0, 0.9),  # val must not be empty; test may be
        "max_studies": (0, None), "synthetic_studies": (2, None),  # a train and a val study
        "synthetic_image_size": (16, None),
    }


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
        image_weights=encoder.identity, image_encoder=describe_encoder(encoder, cfg.encoder_stages),
        split_sizes={name: len(split) for name, split in splits.items()},
        stages={name: np.bincount([s["stage"] for s in split], minlength=4).tolist() for name, split in splits.items()},
    )
    return splits, meta


def build_datasets(cfg: Config):
    """Ray datasets of {image_path, tokens, reference, id, stage} rows by split, and meta."""
    import ray.data

    splits, meta = read_splits(cfg.data_dir or str(synthetic_dataset(cfg)), cfg)
    index = {word: i for i, word in enumerate(meta["vocab"])}
    sys.stdout.write(f"[xr2text] {meta['image_encoder']}; vocabulary {len(index)} words; "
                     f"train studies by stage {meta['stages']['train']}\n")
    return {name: ray.data.from_items(data.rows_of(split, index, cfg.max_tokens)) for name, split in splits.items()}, meta


def preprocess(batch: dict[str, np.ndarray], cfg: Config) -> dict[str, np.ndarray]:
    """Raw rows -> {image uint8 [B, 1, S, S], tokens, reference, id, stage}: only images change."""
    size = cfg.image_size
    images = [data.load_image(str(path), size) for path in batch["image_path"]]
    return {
        "image": np.stack(images) if images else np.zeros((0, 1, size, size), np.uint8),
        **{key: np.stack(list(batch[key])) if len(batch[key]) else np.asarray(batch[key])
           for key in ("tokens", "reference", "id")},
        "stage": np.asarray(batch["stage"], dtype=np.int64),
    }


def build_model(cfg: Config, meta: dict) -> nn.Module:
    if not 1 <= cfg.encoder_stages <= 4:
        raise UserError(f"config key 'encoder_stages' must be in 1..4, not {cfg.encoder_stages}")
    if cfg.d_model % cfg.heads:
        raise UserError(f"config key 'd_model' ({cfg.d_model}) must be divisible by heads ({cfg.heads})")
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
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                           ignore_index=reports.PAD_ID, label_smoothing=smoothing)


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
    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    rows, loss_sum, loss_batches = [], 0.0, 0
    for batch in batches:
        loss_sum += _token_loss(model, batch, 0.0).item()
        loss_batches += 1
        generated = inner.generate(batch["image"], cfg.beam_width, cfg.length_penalty).cpu()
        for ids, reference, study_id in zip(generated, batch["reference"].cpu(), batch["id"].cpu()):
            rows.append({"id": reports.from_bytes(study_id), "reference": reports.from_bytes(reference),
                         "prediction": reports.decode(ids, inner.vocab)})
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
    parser.add_argument("--beam", type=int, default=None, metavar="K",
                        help="beam search width (1: greedy); default: the run's beam_width")


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
