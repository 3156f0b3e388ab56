"""Image captioning: pooled CNN features of an image -> LSTM decoder -> a caption (Flickr8k).

Used by ``python -m platform.run captioning [--tier fast] [--data DIR]`` (DIR: a Flickr8k folder,
see ``trainables/captioning/data.py``; without it a cached synthetic set of drawn shapes) and by
``python -m platform.predict RUN_DIR image.jpg [more.jpg ...] [--beam K]``.

Data flow: ``build_datasets`` reads the captions, builds the vocabulary from the training captions
(``vocab_size`` words, captions cut at ``max_len``) and puts each image's references as token ids
into its row, with the image encoder's identity (network and weights' hash, ``image_weights``
resolved once: ``trainables/image_encoders.py``); ``preprocess`` runs that encoder over the image
files once (Ray Data; the platform keeps the features in its preprocessed store, keyed by the rows
and ``PREPROCESS_KEYS``, and every run and trial reuses them).
Training: teacher forcing over all references of an image at once (each a sequence), cross
entropy over words (``label_smoothing``). Validation: greedy (``beam_width`` 1) or beam-search
captions (``length_penalty``; ``trainables/textgen.py``) scored with pycocoevalcap's BLEU-1..4,
ROUGE-L and CIDEr-D against all references, with the share of distinct captions and the words used
(``trainables/text_metrics.py``); ``METRIC`` is CIDEr-D. Every validation caption is written to
``val_predictions.jsonl`` as the exact text that was scored; a run whose captions collapse to a few
for every image ends with a ``warning:`` line (``run_warnings``).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from platform.errors import UserError
from trainables.captioning.config import METRIC, PREPROCESS_KEYS, Config  # noqa: F401 - the contract's names
from trainables.captioning.data import normalize, read_flickr
from trainables.captioning.features import extract
from trainables.captioning.metrics import caption_metrics
from trainables.captioning.model import Captioner
from trainables.captioning.synthetic import synthetic_dataset
from trainables.captioning.trivial import best_caption
from trainables.captioning.vocab import PAD, START, build_vocabulary, decode, encode_references
from trainables.image_encoders import resolve
from trainables.text_metrics import collapse_warnings


def _checked(cfg: Config) -> None:
    if cfg.vocab_size < 5 or cfg.max_len < 1 or cfg.beam_width < 1 or not 0 <= cfg.dropout < 1:
        raise UserError("config keys 'vocab_size' (>= 5), 'max_len' (>= 1), 'beam_width' (>= 1) or 'dropout' (0 <= p < 1) are out of range")


def raw_rows(cfg: Config) -> tuple[dict[str, list[dict]], dict]:
    """Rows {image_path, image_encoder, captions [refs, max_len+2], eval_index} by split, and meta; no Ray."""
    _checked(cfg)
    data_dir = cfg.data_dir or str(synthetic_dataset(cfg))
    splits, meta = read_flickr(data_dir, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    if not splits.get("train") or not splits.get("val"):
        raise UserError(f"{data_dir}: no training or no validation images (split: {meta['split_source']})")
    vocabulary = build_vocabulary([row["captions"] for row in splits["train"]], cfg.vocab_size, cfg.min_word_count)
    index = {word: k for k, word in enumerate(vocabulary)}
    references = max(len(row["captions"]) for rows in splits.values() for row in rows)
    # Concrete now: the features (and their cache key, through the rows) name the weights they come from.
    encoder = resolve(cfg.image_weights)
    eval_images: list[dict] = []
    items: dict[str, list[dict]] = {}
    for split, rows in splits.items():
        items[split] = []
        for row in rows:
            if split != "train":
                eval_images.append({"image": row["image"], "references": [normalize(c) for c in row["captions"]]})
            items[split].append(
                {
                    "image_path": row["image_path"],
                    "image_encoder": encoder.identity,
                    "captions": encode_references(row["captions"], index, cfg.max_len, references),
                    "eval_index": len(eval_images) - 1 if split != "train" else -1,
                }
            )
    meta.update(
        vocabulary=vocabulary,
        references_per_image=references,
        image_weights=encoder.identity,
        image_encoder=encoder.description,
        image_feature_dim=encoder.dim,
        eval_images=eval_images,
    )
    return items, meta


def build_datasets(cfg: Config):
    """Rows of :func:`raw_rows` by split, and meta; a synthetic set when no data_dir."""
    items, meta = raw_rows(cfg)
    sys.stdout.write(
        f"[captioning] {meta['image_encoder']}; vocabulary {len(meta['vocabulary'])} words; "
        f"images {meta['images']}; skipped captions {meta['skipped_captions']['count']}\n"
    )
    return items, meta


def preprocess(batch: dict[str, np.ndarray], cfg: Config) -> dict[str, np.ndarray]:
    """Raw rows -> {features float32 [B, dim], captions int64 [B, refs, max_len+2], eval_index int64 [B]}."""
    identity = str(batch["image_encoder"][0]) if len(batch["image_encoder"]) else resolve(cfg.image_weights).identity
    return {
        "features": extract(batch["image_path"], cfg.image_size, identity, cfg.image_weights),
        "captions": np.asarray(batch["captions"], dtype=np.int64),
        "eval_index": np.asarray(batch["eval_index"], dtype=np.int64),
    }


def build_model(cfg: Config, meta: dict) -> nn.Module:
    _checked(cfg)
    vocabulary = meta.get("vocabulary") or []
    if len(vocabulary) < 5:
        raise UserError("meta has no vocabulary: build the model from build_datasets' meta")
    # The encoder's width (512 ResNet18, 1280 EfficientNet-Lite0); runs from before it was recorded used ResNet18.
    model = Captioner(len(vocabulary), cfg.embed_dim, cfg.hidden_dim, cfg.dropout, meta.get("image_feature_dim", 512))
    model.vocabulary = list(vocabulary)
    model.eval_images = list(meta.get("eval_images") or [])
    return model


# ---------------------------------------------------------------- loss, evaluation, prediction


def _teacher_forcing(model: nn.Module, batch: dict[str, torch.Tensor], smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross entropy of every reference of every image (each its own sequence), and word accuracy."""
    captions = batch["captions"]
    count, references, length = captions.shape
    sequences = captions.reshape(count * references, length)
    present = sequences[:, 0] == START  # an image with fewer captions pads with empty references
    features = batch["features"].repeat_interleave(references, dim=0)[present]
    sequences = sequences[present]
    logits = model(features, sequences[:, :-1]).float()
    targets = sequences[:, 1:]
    value = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=PAD, label_smoothing=smoothing)
    words = targets != PAD
    accuracy = (logits.argmax(dim=-1) == targets)[words].float().mean()
    return value, {"loss": value.item(), "word_acc": accuracy.item()}


def loss(model: nn.Module, batch: dict[str, torch.Tensor], cfg: Config):
    return _teacher_forcing(model, batch, cfg.label_smoothing)


def evaluate(model: nn.Module, batches, cfg: Config) -> dict:
    """val/loss, val/word_acc (teacher forced, no smoothing), val/bleu1..4, val/rouge_l, val/cider,
    val/distinct, val/vocab (``trainables/text_metrics.py``) and one prediction a validation image."""
    predictions, totals, seen = [], {"loss": 0.0, "word_acc": 0.0}, 0
    for batch in batches:
        _, metrics = _teacher_forcing(model, batch)
        totals = {key: totals[key] + metrics[key] for key in totals}
        seen += 1
        captions = model.caption(batch["features"], cfg.beam_width, cfg.max_len, cfg.length_penalty)
        for index, ids in zip(batch["eval_index"].tolist(), captions.tolist()):
            image = model.eval_images[index]
            predictions.append({"image": image["image"], "references": image["references"], "prediction": decode(ids, model.vocabulary)})
    if not predictions:
        raise UserError("the validation split is empty")
    return {**{f"val/{key}": total / seen for key, total in totals.items()}, **caption_metrics(predictions), "predictions": predictions}


def baseline(read, cfg: Config, meta: dict):
    """The trivial predictor beside every metric: the best training caption for every image (``trivial.py``)."""
    return best_caption(read, meta, cfg.seed)


def run_warnings(manifest: dict) -> list[str]:
    """What the platform prints as ``warning:`` lines when a run ends: captions that collapsed to a
    few for every image, on the best epoch's validation split or on the test split."""
    metrics = {**manifest.get("best_metrics", {}), **manifest.get("test_metrics", {})}
    images = manifest.get("data", {}).get("images", {})
    return collapse_warnings(metrics, {split: images.get(split, 0) for split in ("val", "test")}, "captions")


def add_predict_arguments(parser) -> None:
    parser.add_argument(
        "--beam", type=int, default=None, metavar="K", help="beam width (default: the run's beam_width; 1 is greedy decoding)"
    )


def predict(model: nn.Module, inputs: list[str], cfg: Config, meta: dict, beam: int | None = None) -> list[dict]:
    """A caption for each image file in ``inputs``."""
    width = cfg.beam_width if beam is None else beam
    if width < 1:
        raise UserError(f"--beam must be at least 1, not {width}")
    # Runs from before identities kept the weights' path in encoder_weights.
    identity = meta.get("image_weights") or resolve(meta.get("encoder_weights", cfg.image_weights)).identity
    features = torch.from_numpy(extract(inputs, cfg.image_size, identity, cfg.image_weights))
    model.eval()
    with torch.no_grad():
        ids = model.caption(features.to(next(model.parameters()).device), width, cfg.max_len, cfg.length_penalty).tolist()
    return [{"input": path, "caption": decode(tokens, model.vocabulary)} for path, tokens in zip(inputs, ids)]
