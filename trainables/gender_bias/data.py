"""The labeler's output: reading ``labels.csv`` (image, caption, 0-10 score), splits, images.

Used by ``python -m platform.run gender_bias --data DIR`` where DIR is what
``python -m platform.label`` wrote: ``labels.csv`` with columns post_id, image_path (absolute, or
relative to DIR), caption, score, reason, model, prompt_version, prompt_tokens, completion_tokens,
cost_usd, latency_s, cached; optionally ``quarantine.csv`` (rows the labeler gave up on, only
counted here). No Ray here: tests call it directly.

Bad rows are errors, not skipped: the labeler already quarantines what it could not score, so a
row here that lacks a caption, a score in 0..10 or an image means the folder was edited or copied
badly, and training on the rest would hide it. Missing images, bad scores, a relative image_path
that climbs out of DIR, and an empty or non-UTF-8 CSV are found when the folder is read; an image
that exists but does not decode, or is a decompression bomb, is found in preprocessing (decoding
every image up front would read the whole set twice).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from platform.data.content_hash import content_hash
from platform.data.locations import Folder
from platform.errors import UserError
from trainables.files import confined, read_csv, utf8_text
from trainables.gender_bias import labeling

LABEL_COLUMNS = (
    "post_id",
    "image_path",
    "caption",
    "score",
    "reason",
    "model",
    "prompt_version",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_s",
    "cached",
)
# What training needs; the rest is the labeler's ledger, summarised in meta when present.
REQUIRED_COLUMNS = ("post_id", "image_path", "caption", "score")
assert REQUIRED_COLUMNS == (*labeling.COLUMNS.values(), labeling.LABEL), "labels.csv is what the task writes"


def _read_csv(root: Folder, name: str, shown: str, columns: tuple[str, ...] = (), rows_required: bool = True) -> tuple[pd.DataFrame, bytes]:
    try:
        raw = root.read_bytes(name)
    except OSError:
        raise UserError(f"{shown}: not found or unreadable") from None
    # Everything as text (post ids like "1e5" stay ids, a caption "NA" stays a caption).
    frame = read_csv(utf8_text(raw, shown), shown, columns, rows_required, dtype=str, keep_default_na=False)
    return frame, raw


def _count_rows(root: Folder, name: str) -> int:
    if not root.is_file(name):
        return 0
    return len(_read_csv(root, name, root.path(name), rows_required=False)[0])


def _checked_rows(frame: pd.DataFrame, root: Folder, shown: str) -> list[dict]:
    """Rows {post_id, image_path (absolute, or a URI in an object-store DIR), caption, score}; the
    first bad one is a UserError."""
    files = root.tree()  # one listing: every relative image is looked up in it
    scores = pd.to_numeric(frame["score"], errors="coerce")
    rows = []
    for line, (post_id, image, caption, score, text) in enumerate(
        zip(frame["post_id"], frame["image_path"], frame["caption"], scores, frame["score"]), start=2
    ):
        where = f"{shown} line {line} (post {post_id})"
        if not caption.strip():
            raise UserError(f"{where}: empty caption")
        if not np.isfinite(score) or not labeling.SCORE_RANGE[0] <= score <= labeling.SCORE_RANGE[1]:
            raise UserError(f"{where}: score {text!r} is not a number in 0..10")
        if not image.strip():
            raise UserError(f"{where}: empty image_path")
        if "\x00" in image:  # no file's name does (and the message would print it raw)
            raise UserError(f"{where}: image_path {image!r} holds a NUL byte")
        # Absolute paths are what the labeler writes (into the folder it labeled); relative ones stay in DIR.
        if Path(image).is_absolute():
            path, found = str(Path(image)), Path(image).is_file()
        else:
            relative = confined(image, where)
            path, found = root.path(relative), relative in files
        if not found:
            raise UserError(f"{where}: image not found: {path}")
        rows.append({"post_id": post_id, "image_path": path, "caption": caption, "score": float(score)})
    return rows


def _ledger(frame: pd.DataFrame) -> dict:
    """What labeling cost and which model and prompt scored the set, where the columns exist."""
    ledger = {}
    for column in ("model", "prompt_version"):
        if column in frame:
            ledger[f"{column}s"] = sorted(set(frame[column]) - {""})
    if "cost_usd" in frame:
        ledger["cost_usd"] = round(float(pd.to_numeric(frame["cost_usd"], errors="coerce").fillna(0).sum()), 6)
    return ledger


def split_rows(count: int, val_fraction: float, max_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) row indices: a seeded shuffle, capped at max_samples (0: all), then split."""
    order = np.random.default_rng(seed).permutation(count)
    if max_samples > 0:
        order = order[:max_samples]
    held_out = round(len(order) * val_fraction)
    held_out = min(max(held_out, 1 if len(order) > 1 and val_fraction > 0 else 0), max(len(order) - 1, 0))
    return np.sort(order[held_out:]), np.sort(order[:held_out])


def read_labels(data_dir: str, val_fraction: float = 0.2, max_samples: int = 0, seed: int = 0) -> tuple[dict[str, list[dict]], dict]:
    """Rows by split and meta of a labeler output folder, without Ray."""
    root = Folder(data_dir)
    if not root.exists():
        raise UserError(f"{data_dir}: data folder not found")
    labels = root.shown("labels.csv")
    frame, raw = _read_csv(root, "labels.csv", labels, REQUIRED_COLUMNS)
    rows = _checked_rows(frame, root, labels)
    train, val = split_rows(len(rows), val_fraction, max_samples, seed)
    splits = {"train": [rows[i] for i in train], "val": [rows[i] for i in val]}
    scores = np.array([r["score"] for r in rows])
    meta = {
        "data_path": root.location,
        "content_hash": content_hash([raw], {row["image_path"]: row["image_path"] for row in rows}),
        "num_posts": len(rows),
        "max_samples": max_samples,
        "split_sizes": {name: len(split) for name, split in splits.items()},
        "quarantined": _count_rows(root, "quarantine.csv"),
        "score_mean": round(float(scores.mean()), 4),
        "score_std": round(float(scores.std()), 4),
        "labeling": _ledger(frame),
    }
    return splits, meta
