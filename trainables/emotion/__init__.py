"""Emotion and sentiment of a MELD utterance from its text, audio and video.

Used by ``python -m platform.run emotion [--tier fast] [--data DIR]`` (DIR in the MELD layout, see
``trainables/emotion/data.py``; without it a cached synthetic set in that layout) and by
``python -m platform.predict RUN_DIR "utterance" [--clip dia0_utt0.mp4] [--context "Ross: Hi. Monica: Hey."]``.

Preprocessing (once, cached by the platform for the ``PREPROCESS_KEYS``) tokenizes the utterance
(after its dialogue's previous ``context_turns`` utterances, speaker-tagged: ``text.py``) and
decodes its clip with PyAV into a log-mel spectrogram and a few frames, whatever ``modalities`` says,
so the unimodal baselines and the trimodal model share one decoding; a row whose clip is missing or
undecodable keeps its text, with audio and video masked. The model (``model.py``) encodes the
configured modalities, fuses them (concatenation or attention), and classifies the emotion (7
classes) and the sentiment (3), one head or both; class imbalance is met by class weights in the
loss (inverse frequency, or its square root, which serves weighted F1 better) or by oversampling.
``METRIC`` is the weighted F1 of the emotion head (of the sentiment head when it trains alone),
MELD's usual headline number.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from platform.errors import UserError
from trainables.emotion.config import METRIC, PREPROCESS_KEYS, Config  # noqa: F401 - the contract's names
from trainables.emotion.data import EMOTIONS, SENTIMENTS, class_counts, class_weights, dialogue_inputs, oversample, read_meld
from trainables.emotion.media import ClipShape, decode_clip, empty_clip
from trainables.emotion.metrics import classification_metrics, confusion
from trainables.emotion.model import EmotionClassifier, describe_sources, parse_modalities
from trainables.emotion.synthetic import synthetic_dataset
from trainables.emotion.text import encode
from trainables.emotion.trivial import majority
from trainables.image_encoders import chosen, resolve
from trainables.pretrained import load_tokenizer, text_source

CLASSES = {"emotion": EMOTIONS, "sentiment": SENTIMENTS}


def parse_tasks(text: str) -> tuple[str, ...]:
    chosen = tuple(name.strip() for name in text.split(",") if name.strip())
    if not chosen or any(name not in CLASSES for name in chosen):
        raise UserError(f"config key 'tasks' must be emotion, sentiment or emotion,sentiment (got {text!r})")
    return tuple(name for name in CLASSES if name in chosen)


def clip_shape(cfg: Config) -> ClipShape:
    if cfg.sample_rate < 4000 or cfg.n_mels < 8 or cfg.audio_seconds <= 0 or cfg.frames < 1 or cfg.frame_size < 16:
        raise UserError(
            "config keys sample_rate (>= 4000), n_mels (>= 8), audio_seconds (> 0), frames (>= 1) and frame_size (>= 16) are out of range"
        )
    return ClipShape(cfg.sample_rate, cfg.n_mels, cfg.audio_seconds, cfg.frames, cfg.frame_size)


def build_datasets(cfg: Config):
    """{utterance, speaker, context, target, clip, emotion, sentiment, dialogue_id, utterance_id}
    rows by split, and meta."""
    tasks, modalities = parse_tasks(cfg.tasks), parse_modalities(cfg.modalities)
    clip_shape(cfg)
    load_tokenizer(cfg.text_model)  # a bad text_model fails here, in one line, before Ray Data starts
    splits, meta = read_meld(cfg.data_dir or str(synthetic_dataset(cfg)), cfg.max_rows)
    counts = {task: class_counts(splits["train"], task, CLASSES[task]) for task in tasks}
    meta.update(tasks=list(tasks), classes=list(CLASSES[tasks[0]]), train_class_counts=counts)
    if "sentiment" in tasks and len(tasks) > 1:
        meta["sentiment_classes"] = list(SENTIMENTS)
    splits = {split: dialogue_inputs(rows, cfg.context_turns) for split, rows in splits.items()}
    if cfg.balance in ("weights", "sqrt_weights"):
        power = 1.0 if cfg.balance == "weights" else 0.5
        meta["class_weights"] = {task: class_weights(task_counts, power) for task, task_counts in counts.items()}
    elif cfg.balance == "oversample":
        splits["train"] = oversample(splits["train"], tasks[0], cfg.seed)
        meta["oversampled_train_rows"] = len(splits["train"])
    # Concrete now, so predict on another machine rebuilds the same architecture.
    meta["text_model"] = text_source(cfg.text_model)
    encoder = resolve(cfg.image_weights) if "video" in modalities else None
    if encoder is not None:
        meta["image_weights"] = encoder.identity
    meta["weights"] = describe_sources(cfg.text_model, encoder, modalities)
    sys.stdout.write(f"[emotion] missing clips (text only): {meta['missing_clips']}; encoders: {'; '.join(meta['weights'].values())}\n")
    return splits, meta


def features(utterances, clips, cfg: Config, text_model: str | None = None, strict: bool = False, contexts=None) -> dict:
    """Tokens (and the target's mask), mel spectrograms, frames and has_audio/has_video of utterances,
    their dialogue contexts (None: none) and their clips ("" = none).

    Not strict (training), an undecodable clip is masked like a missing one and reported on stderr.
    """
    shape = clip_shape(cfg)
    decoded = []
    for clip in clips:
        try:
            decoded.append(decode_clip(str(clip), shape) if clip else empty_clip(shape))
        except UserError as err:
            if strict:
                raise
            sys.stderr.write(f"[emotion] {err}: its audio and video are masked\n")
            decoded.append(empty_clip(shape))
    tokenizer = load_tokenizer(text_model or cfg.text_model)
    contexts = [""] * len(utterances) if contexts is None else [str(c) for c in contexts]
    return {
        **encode(tokenizer, [str(u) for u in utterances], contexts, cfg.max_tokens),
        "mel": np.stack([d.mel for d in decoded]) if decoded else np.zeros((0, shape.n_mels, shape.mel_steps), np.float16),
        "frames": (
            np.stack([d.frames for d in decoded])
            if decoded
            else np.zeros((0, shape.frames, 3, shape.frame_size, shape.frame_size), np.uint8)
        ),
        "has_audio": np.array([d.has_audio for d in decoded], dtype=np.float32),
        "has_video": np.array([d.has_video for d in decoded], dtype=np.float32),
    }


def preprocess(batch: dict[str, np.ndarray], cfg: Config) -> dict[str, np.ndarray]:
    """Raw rows -> numeric columns only: tokens, mel, frames, has_audio/has_video, labels and ids."""
    return {
        **features(batch["target"], batch["clip"], cfg, contexts=batch["context"]),
        **{key: np.asarray(batch[key], dtype=np.int64) for key in ("emotion", "sentiment", "dialogue_id", "utterance_id")},
    }


def build_model(cfg: Config, meta: dict) -> nn.Module:
    if cfg.fusion_dim < 4 or not 0 <= cfg.dropout < 1 or not 0 <= cfg.modality_dropout < 1 or cfg.audio_width < 1:
        raise UserError("config keys fusion_dim (>= 4), dropout and modality_dropout (0 <= p < 1) and audio_width (>= 1) are out of range")
    heads = {task: len(CLASSES[task]) for task in parse_tasks(cfg.tasks)}
    encoder = chosen(meta, cfg.image_weights) if "video" in parse_modalities(cfg.modalities) else None
    return EmotionClassifier(cfg, meta.get("text_model") or cfg.text_model, encoder, heads, meta.get("class_weights", {}))


# ---------------------------------------------------------------- loss, evaluation, prediction


def loss(model: nn.Module, batch: dict[str, torch.Tensor], cfg: Config):
    """Cross-entropy of each head (class-weighted when balance=weights); the sentiment one scaled by sentiment_weight."""
    core = getattr(model, "module", model)  # the class weights are the model's; DDP wraps it when training
    logits = model(batch)
    total, metrics = 0.0, {}
    for index, (task, task_logits) in enumerate(logits.items()):
        value = F.cross_entropy(task_logits.float(), batch[task], weight=getattr(core, f"{task}_weights"))
        total = total + (cfg.sentiment_weight if index else 1.0) * value
        accuracy = (task_logits.argmax(dim=1) == batch[task]).float().mean().item()
        metrics.update({"acc": accuracy} if index == 0 else {f"{task}_acc": accuracy})
    metrics["loss"] = float(total.item())
    return total, metrics


def evaluate(model: nn.Module, batches, cfg: Config) -> dict:
    """Per head: accuracy, weighted and macro F1; the first head's per-class precision and recall,
    loss, confusion matrix and one prediction a row."""
    tasks = parse_tasks(cfg.tasks)
    collected: dict[str, list] = {key: [] for key in (*tasks, *(f"{t}_logits" for t in tasks), "dialogue_id", "utterance_id")}
    for batch in batches:
        logits = model(batch)
        for task in tasks:
            collected[f"{task}_logits"].append(logits[task].float().cpu())
            collected[task].append(batch[task].cpu())
        collected["dialogue_id"].append(batch["dialogue_id"].cpu())
        collected["utterance_id"].append(batch["utterance_id"].cpu())
    if not collected["dialogue_id"]:
        raise UserError("the validation split is empty")
    joined = {key: torch.cat(values) for key, values in collected.items()}
    first = tasks[0]
    metrics = {"val/loss": F.cross_entropy(joined[f"{first}_logits"], joined[first]).item()}
    predicted = {task: joined[f"{task}_logits"].argmax(dim=1).numpy() for task in tasks}
    for index, task in enumerate(tasks):
        prefix = "val/" if index == 0 else f"val/{task}/"
        metrics.update(classification_metrics(joined[task].numpy(), predicted[task], CLASSES[task], prefix, per_class=index == 0))
    metrics["confusion_matrix"] = confusion(joined[first].numpy(), predicted[first], CLASSES[first])
    metrics["predictions"] = _prediction_rows(joined, predicted, tasks)
    return metrics


def baseline(read, cfg: Config, meta: dict):
    """The trivial predictor beside every metric: each head's training majority class (``trivial.py``)."""
    return majority(meta["train_class_counts"], CLASSES, parse_tasks(cfg.tasks), lambda model, b: evaluate(model, b, cfg))


def _prediction_rows(joined: dict, predicted: dict, tasks: tuple[str, ...]) -> list[dict]:
    rows = []
    for k, (dialogue, utterance) in enumerate(zip(joined["dialogue_id"].tolist(), joined["utterance_id"].tolist())):
        row = {"id": f"dia{dialogue}_utt{utterance}"}
        for task in tasks:
            row[f"{task}_true"] = CLASSES[task][int(joined[task][k])]
            row[f"{task}_predicted"] = CLASSES[task][int(predicted[task][k])]
        rows.append(row)
    return rows


def add_predict_arguments(parser) -> None:
    parser.add_argument(
        "--clip", default=None, metavar="CLIP.mp4", help="the utterance's clip (its audio and frames); without it the text alone is used"
    )
    parser.add_argument(
        "--context",
        default="",
        metavar="TEXT",
        help='the dialogue so far, "Speaker: utterance" turns, for a model trained with context_turns > 0',
    )


def predict(model: nn.Module, inputs: list[str], cfg: Config, meta: dict, clip: str | None = None, context: str = "") -> list[dict]:
    """Emotion (``top``) and sentiment of each utterance, with the clip's audio and frames and the
    dialogue context when given (the context is ignored by a model trained without it)."""
    if clip is not None and not Path(clip).is_file():
        raise UserError(f"{clip}: clip not found")
    utterances = [str(u) for u in inputs]
    if not all(u.strip() for u in utterances):
        raise UserError("an utterance is empty")
    contexts = [context if cfg.context_turns else ""] * len(utterances)
    arrays = features(utterances, [clip or ""] * len(utterances), cfg, meta.get("text_model"), strict=True, contexts=contexts)
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        logits = model({key: torch.from_numpy(value).to(device) for key, value in arrays.items()})
    tasks = list(logits)
    results = []
    for k, utterance in enumerate(utterances):
        probs = {task: torch.softmax(logits[task][k].float(), dim=0).tolist() for task in tasks}
        ranked = sorted(zip(CLASSES[tasks[0]], probs[tasks[0]]), key=lambda pair: -pair[1])
        result = {"input": utterance, "top": [{"label": label, "prob": round(p, 4)} for label, p in ranked]}
        if len(tasks) > 1:
            best = int(np.argmax(probs["sentiment"]))
            result["sentiment"] = f"{SENTIMENTS[best]} ({probs['sentiment'][best]:.3f})"
        result["modalities"] = "+".join(
            name
            for name, present in (("text", 1.0), ("audio", arrays["has_audio"][k]), ("video", arrays["has_video"][k]))
            if present and name in model.modalities
        )
        results.append(result)
    return results
