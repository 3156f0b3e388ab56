"""ASL signs: isolated sign classification from MediaPipe landmarks (Kaggle "asl-signs").

Used by ``python -m platform.run asl [--tier fast] [--data DIR]`` (DIR holds ``train.csv`` and
``train_landmark_files/``), and by ``python -m platform.predict RUN_DIR seq.parquet ...``.

Features: 62 landmarks a frame (both hands, 21 each, and 20 face points), relative to the nose
and scaled by the eye distance, then position, velocity, acceleration and displacement since the
first sighting: 62 * 3 * 4 = 744 numbers a frame. Model: TCN -> BiLSTM -> self-attention ->
Conv1D and Transformer blocks -> masked mean pooling, with adaptive and late dropout and DropPath.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

from platform.config import TrainConfig
from platform.errors import UserError

METRIC = ("val/acc", "max")

LANDMARK_TYPES = {"face": (0, 468), "left_hand": (468, 21), "pose": (489, 33), "right_hand": (522, 21)}
LANDMARKS_PER_FRAME = 543
LANDMARK_COLUMNS = ("frame", "type", "landmark_index", "x", "y", "z")
INDEX_COLUMNS = ("path", "participant_id", "sequence_id", "sign")
# MediaPipe FaceMesh indices. Nose: 1 tip, 6 bridge. Eyes: 33/263 outer corners, 133/362 inner
# corners, 159/386 upper and 145/374 lower lids. Lips: 61/291 outer corners, 0/17 outer
# top/bottom, 13/14 inner top/bottom, 78/308 inner corners, 40/270 upper outer lip.
FACE_POINTS = (1, 6, 33, 133, 159, 145, 263, 362, 386, 374, 61, 291, 0, 17, 13, 14, 78, 308, 40, 270)
NOSE, LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 1, 263, 33
HAND_POINTS = tuple(range(468, 489)) + tuple(range(522, 543))
KEPT_POINTS = HAND_POINTS + FACE_POINTS
NUM_FEATURES = len(KEPT_POINTS) * 3 * 4
# Beyond this many eye distances from the nose a value is a tracking glitch (MediaPipe z spikes).
FEATURE_CLIP = 20.0
SYNTHETIC_VERSION = 2


@dataclasses.dataclass
class Config(TrainConfig):
    """The seed's full recipe; tiers in ``search_spaces/asl.py`` shrink it."""

    epochs: int = 300
    """Maximum number of epochs."""
    batch_size: int = 32
    """Batch size per worker."""
    lr: float = 4e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.005
    """AdamW weight decay."""
    scheduler: str = "cosine_restarts"
    """Learning-rate schedule stepped each epoch: none, cosine or cosine_restarts."""
    patience: int = 20
    """Early stopping: epochs without a better validation metric before stopping; 0 turns it off."""
    max_len: int = 384
    """Frames a sequence is padded to; longer ones are resampled evenly down to it."""
    dim: int = 192
    """Model width (even, divisible by heads)."""
    heads: int = 8
    """Attention heads of the self-attention and Transformer blocks."""
    kernel_size: int = 17
    """Kernel of the temporal convolutions."""
    tcn_dilations: tuple[int, ...] = (1, 2, 4)
    """Dilation of each TCN block (one block each)."""
    tcn_dropouts: tuple[float, ...] = (0.15, 0.2, 0.25)
    """Dropout of each TCN block, same length as tcn_dilations."""
    lstm_layers: int = 2
    """Layers of the bidirectional LSTM (dim/2 hidden units per direction)."""
    conv_blocks: int = 2
    """Conv1D blocks after the self-attention."""
    transformer_blocks: int = 1
    """Transformer blocks after the Conv1D blocks."""
    conv_expand: int = 2
    """Channel expansion inside each convolution block."""
    ffn_expand: int = 4
    """Feed-forward expansion of the Transformer blocks."""
    block_dropout: float = 0.2
    """Dropout inside the Conv1D, attention and Transformer blocks."""
    drop_path: float = 0.1
    """Stochastic depth of the last residual block (rising linearly from 0 over the blocks)."""
    adaptive_dropout_start: float = 0.1
    """Dropout between the stages at epoch 0."""
    adaptive_dropout_end: float = 0.6
    """Dropout between the stages once adaptive_dropout_epochs have passed."""
    adaptive_dropout_epochs: int = 30
    """Epochs over which the stage dropout rises linearly from start to end."""
    late_dropout: float = 0.8
    """Dropout before the classifier, switched on at late_dropout_epoch."""
    late_dropout_epoch: int = 60
    """First epoch (from 0) with late dropout."""
    label_smoothing: float = 0.05
    """Label smoothing of the training cross-entropy."""
    val_fraction: float = 0.2
    """Share of each sign's sequences held out for validation (seeded by seed)."""
    synthetic_signs: int = 20
    """Synthetic set (no data_dir): number of signs."""
    synthetic_sequences: int = 2000
    """Synthetic set: number of sequences over all signs."""
    synthetic_frames: int = 48
    """Synthetic set: mean frames a sequence (they vary from half to one and a half times it)."""
    synthetic_participants: int = 6
    """Synthetic set: number of signers (a quarter of them left-handed)."""


# ---------------------------------------------------------------- reading landmark files


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, for local paths and URIs (s3://, gs://...)."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def read_landmarks(path: str) -> np.ndarray:
    """[frames, 543, 3] float32 landmarks of one parquet file, NaN where not seen."""
    try:
        fs, inner = _filesystem(path)
        names = set(pq.read_schema(inner, filesystem=fs).names)
        missing = [c for c in LANDMARK_COLUMNS if c not in names]
        if missing:
            raise UserError(f"{path}: landmark file lacks column(s) {', '.join(missing)}")
        table = pq.read_table(inner, filesystem=fs, columns=list(LANDMARK_COLUMNS))
    except (OSError, pa.ArrowException) as err:
        raise UserError(f"{path}: cannot read landmark parquet ({str(err).splitlines()[0]})") from None
    type_codes = pc.index_in(table["type"], value_set=pa.array(list(LANDMARK_TYPES))).to_numpy(zero_copy_only=False)
    known = ~pd.isna(type_codes)
    starts = np.array([start for start, _ in LANDMARK_TYPES.values()])
    sizes = np.array([size for _, size in LANDMARK_TYPES.values()])
    codes = np.where(known, type_codes, 0).astype(int)
    index = table["landmark_index"].to_numpy(zero_copy_only=False).astype(int)
    known &= (index >= 0) & (index < sizes[codes])
    frames, frame_pos = np.unique(table["frame"].to_numpy(zero_copy_only=False), return_inverse=True)
    xyz = np.stack([table[c].to_numpy(zero_copy_only=False) for c in "xyz"], axis=-1)
    landmarks = np.full((len(frames), LANDMARKS_PER_FRAME, 3), np.nan, dtype=np.float32)
    landmarks[frame_pos[known], starts[codes[known]] + index[known]] = xyz[known]
    return landmarks


def _fill_missing_frames(points: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """[frames, 3] with frames where the point was not seen set to its mean (else fallback)."""
    seen = np.isfinite(points).all(axis=-1)
    mean = points[seen].mean(axis=0) if seen.any() else fallback
    return np.where(seen[:, None], points, mean)


def _normalise(landmarks: np.ndarray) -> np.ndarray:
    """Kept points relative to the nose, in eye distances, so signers' position and size cancel."""
    points = landmarks[:, KEPT_POINTS]
    fallback = np.nanmean(points.reshape(-1, 3), axis=0)
    nose = _fill_missing_frames(landmarks[:, NOSE], fallback)
    eyes = np.linalg.norm(landmarks[:, LEFT_EYE_OUTER, :2] - landmarks[:, RIGHT_EYE_OUTER, :2], axis=-1)
    scale = np.nanmedian(eyes) if np.isfinite(eyes).any() else np.nan
    if not np.isfinite(scale) or scale < 1e-6:
        scale = np.nanstd(points[..., :2]) or 1.0
    return (points - nose[:, None]) / scale


def _motion(positions: np.ndarray) -> list[np.ndarray]:
    """Velocity, acceleration and displacement since first sighting; NaN wherever a frame misses."""
    velocity = np.diff(positions, axis=0, prepend=positions[:1])
    acceleration = np.diff(velocity, axis=0, prepend=velocity[:1])
    seen = np.isfinite(positions[..., 0])
    first = seen.argmax(axis=0)
    displacement = positions - positions[first, np.arange(positions.shape[1])]
    return [velocity, acceleration, displacement]


def sequence_features(landmarks: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """([max_len, 744] float32 features, [max_len] bool mask of real frames) of one sequence.

    Frames before the first and after the last sighting of a hand are dropped (the sign happens
    between them); gaps inside stay, so timing survives. Unseen values are 0, and a hand that
    reappears gets no velocity spike because differences with a missing frame are 0 too.
    """
    hand_seen = np.isfinite(landmarks[:, HAND_POINTS, 0]).any(axis=1)
    if not hand_seen.any():
        raise ValueError("no hand landmarks in any frame")
    seen_frames = np.flatnonzero(hand_seen)
    landmarks = landmarks[seen_frames[0] : seen_frames[-1] + 1]
    positions = _normalise(landmarks)
    parts = [positions, *_motion(positions)]
    frames = len(landmarks)
    features = np.concatenate([p.reshape(frames, -1) for p in parts], axis=1)
    features = np.clip(np.nan_to_num(features, nan=0.0), -FEATURE_CLIP, FEATURE_CLIP)
    if frames > max_len:
        features = features[np.linspace(0, frames - 1, max_len).round().astype(int)]
    padded = np.zeros((max_len, NUM_FEATURES), dtype=np.float32)
    padded[: min(frames, max_len)] = features
    return padded, np.arange(max_len) < min(frames, max_len)


def extract_features(path: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and mask of one parquet file; a file the model cannot use is a UserError."""
    landmarks = read_landmarks(path)
    try:
        return sequence_features(landmarks, max_len)
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None


def preprocess(batch: dict[str, np.ndarray], cfg: Config) -> dict[str, np.ndarray]:
    """Raw rows {path, label} -> {x [B, max_len, 744], mask [B, max_len], label}."""
    pairs = [extract_features(str(path), cfg.max_len) for path in batch["path"]]
    return {
        "x": np.stack([x for x, _ in pairs]),
        "mask": np.stack([m for _, m in pairs]),
        "label": np.asarray(batch["label"], dtype=np.int64),
    }


# ---------------------------------------------------------------- the dataset index


def _read_bytes(fs: pafs.FileSystem, path: str, shown: str) -> bytes:
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except (OSError, pa.ArrowException):
        raise UserError(f"{shown}: not found or unreadable") from None


def _read_train_csv(fs: pafs.FileSystem, root: str, shown: str) -> tuple[pd.DataFrame, bytes]:
    raw = _read_bytes(fs, f"{root}/train.csv", f"{shown}/train.csv")
    try:
        frame = pd.read_csv(io.BytesIO(raw), dtype={"path": str, "sign": str})
    except (ValueError, pd.errors.ParserError) as err:
        raise UserError(f"{shown}/train.csv: not a readable CSV ({err})") from None
    missing = [c for c in INDEX_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{shown}/train.csv: missing column(s) {', '.join(missing)}")
    if frame.empty or frame[["path", "sign"]].isna().any().any():
        raise UserError(f"{shown}/train.csv: no rows, or rows without path or sign")
    return frame, raw


def _read_classes(fs: pafs.FileSystem, root: str, shown: str, signs: pd.Series) -> tuple[list[str], bytes]:
    """Classes in prediction-index order from the map if present, else the sorted signs."""
    map_path = f"{root}/sign_to_prediction_index_map.json"
    if fs.get_file_info(map_path).type == pafs.FileType.NotFound:
        return sorted(signs.unique()), b""
    raw = _read_bytes(fs, map_path, f"{shown}/sign_to_prediction_index_map.json")
    try:
        mapping = json.loads(raw)
        classes = sorted(mapping, key=lambda sign: int(mapping[sign]))
    except (ValueError, TypeError, AttributeError):
        raise UserError(f"{shown}/sign_to_prediction_index_map.json: not a sign -> index object") from None
    unknown = sorted(set(signs) - set(classes))
    if unknown:
        raise UserError(f"{shown}/train.csv: sign {unknown[0]!r} is not in sign_to_prediction_index_map.json")
    return classes, raw


def _content_hash(index_files: list[bytes], paths: list[str], infos: list[pafs.FileInfo]) -> str:
    """sha256 of the index files and each landmark file's path and size (no file is read)."""
    digest = hashlib.sha256()
    for raw in index_files:
        digest.update(hashlib.sha256(raw).digest())
    for path, info in sorted(zip(paths, (i.size for i in infos))):
        digest.update(f"{path}\0{info}\n".encode())
    return "sha256:" + digest.hexdigest()


def stratified_split(labels: list[int], val_fraction: float, seed: int) -> np.ndarray:
    """Boolean "is validation" per row: the same share of every class, seeded, order-free."""
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), dtype=bool)
    labels = np.asarray(labels)
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(len(rows) * val_fraction))
        count = min(max(count, 1 if len(rows) > 1 and val_fraction > 0 else 0), len(rows) - 1)
        is_val[rows[:count]] = True
    return is_val


def read_index(data_dir: str, val_fraction: float = 0.2, seed: int = 0) -> tuple[dict[str, list[dict]], dict]:
    """Rows {path, label} by split and meta of a Kaggle-layout folder, without Ray."""
    fs, root = _filesystem(data_dir)
    shown = data_dir.rstrip("/")
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise UserError(f"{shown}: data folder not found")
    frame, csv_raw = _read_train_csv(fs, root, shown)
    classes, map_raw = _read_classes(fs, root, shown, frame["sign"])
    relative = frame["path"].tolist()
    infos = fs.get_file_info([f"{root}/{p}" for p in relative])
    for rel, info in zip(relative, infos):
        if info.type != pafs.FileType.File:
            raise UserError(f"{shown}/train.csv names a missing landmark file: {rel}")
    base = shown if "://" in data_dir else root
    label_of = {sign: i for i, sign in enumerate(classes)}
    labels = [label_of[s] for s in frame["sign"]]
    is_val = stratified_split(labels, val_fraction, seed)
    rows = [{"path": f"{base}/{rel}", "label": label} for rel, label in zip(relative, labels)]
    splits = {"train": [r for r, v in zip(rows, is_val) if not v], "val": [r for r, v in zip(rows, is_val) if v]}
    meta = {
        "classes": classes,
        "data_path": base,
        "content_hash": _content_hash([csv_raw, map_raw], relative, infos),
        "num_sequences": len(rows),
        "split_sizes": {name: len(split) for name, split in splits.items()},
    }
    return splits, meta


def build_datasets(cfg: Config):
    """Ray datasets of {path, label} rows (train and val) and meta; synthetic when no data_dir."""
    import ray.data

    data_dir = cfg.data_dir or str(synthetic_dataset(cfg))
    splits, meta = read_index(data_dir, cfg.val_fraction, cfg.seed)
    if not splits["val"]:
        raise UserError(f"{data_dir}: too few sequences for a validation split (val_fraction={cfg.val_fraction})")
    return {name: ray.data.from_items(rows) for name, rows in splits.items()}, meta


# ---------------------------------------------------------------- the synthetic set


def cache_root() -> Path:
    return Path(os.environ.get("RAYPLATFORM_CACHE") or Path.home() / ".cache" / "rayplatform")


def _face_template(rng: np.random.Generator) -> np.ndarray:
    """[468, 2] face offsets: a cloud with the eyes, nose and lips where the features read them."""
    angle, radius = rng.uniform(0, 2 * np.pi, 468), np.sqrt(rng.uniform(0, 1, 468))
    face = np.stack([0.08 * radius * np.cos(angle), 0.11 * radius * np.sin(angle)], axis=1)
    eye = [(-0.05, -0.04), (-0.02, -0.04), (-0.035, -0.05), (-0.035, -0.03)]
    eyes = eye + [(-x, y) for x, y in eye]
    lips = [(-0.03, 0.05), (0.03, 0.05), (0, 0.04), (0, 0.065), (0, 0.048), (0, 0.055)]
    lips += [(-0.022, 0.05), (0.022, 0.05), (-0.015, 0.042), (0.015, 0.042)]
    face[list(FACE_POINTS)] = [(0, 0), (0, -0.04)] + eyes + lips
    return face


def _hand(wrist: np.ndarray, angle: np.ndarray, curl: np.ndarray, size: float) -> np.ndarray:
    """[T, 21, 3] MediaPipe-ordered hand: wrist, then 4 joints for each of the 5 fingers."""
    spread = np.array([-0.9, -0.35, 0.0, 0.3, 0.6])
    bends = np.array([0.0, 0.7, 1.4, 2.1])
    lengths = size * np.array([0.035, 0.02, 0.015, 0.012])
    angles = angle[:, None, None] + spread[None, :, None] + curl[None, :, None] * bends
    steps = lengths * np.stack([np.cos(angles), np.sin(angles)], axis=-1).transpose(3, 0, 1, 2)
    joints = wrist[:, None, None, :] + np.cumsum(steps, axis=-1).transpose(1, 2, 3, 0)
    xy = np.concatenate([wrist[:, None], joints.reshape(len(wrist), 20, 2)], axis=1)
    depth = -0.01 * np.concatenate([[0], np.tile(np.arange(1, 5), 5)])
    return np.concatenate([xy, np.broadcast_to(depth[None, :, None], (len(wrist), 21, 1))], axis=-1)


def _synthetic_sequence(sign: dict, person: dict, face: np.ndarray, pose: np.ndarray, rng) -> np.ndarray:
    """[T, 543, 3] landmarks of one signer doing one sign: a sign-specific wrist path and hand shape."""
    frames = int(rng.integers(max(4, person["frames"] // 2), person["frames"] * 3 // 2 + 1))
    t = np.linspace(0, 1, frames) ** rng.uniform(0.8, 1.25)
    centre = person["centre"] + rng.normal(0, 0.005, 2)
    phase = sign["phase"] + rng.normal(0, 0.6, 2)
    path = sign["amp"] * rng.uniform(0.6, 1.4, 2) * np.sin(2 * np.pi * sign["freq"] * t[:, None] + phase)
    wrist = centre + person["scale"] * (np.array([0.12, 0.25 + sign["height"]]) + path)
    angle = -np.pi / 2 + sign["spin"] * t + rng.normal(0, 0.3)
    curl = np.clip(sign["curl"] + rng.normal(0, 0.2, 5), 0, 1)
    landmarks = np.full((frames, LANDMARKS_PER_FRAME, 3), np.nan)
    landmarks[:, :468, :2] = centre + person["scale"] * face + rng.normal(0, 0.002, (frames, 468, 2))
    landmarks[:, :468, 2] = rng.normal(0, 0.02, (frames, 468))
    landmarks[:, 489:522, :2] = centre + person["scale"] * pose + rng.normal(0, 0.003, (frames, 33, 2))
    landmarks[:, 489:522, 2] = rng.normal(0, 0.1, (frames, 33))
    dominant = _hand(wrist, angle, curl, person["scale"]) + rng.normal(0, 0.006, (frames, 21, 3))
    mirrored = dominant * [-1, 1, 1] + [2 * centre[0], 0, 0]
    dominant_slot, other_slot = (468, 522) if person["left_handed"] else (522, 468)
    landmarks[:, dominant_slot : dominant_slot + 21] = mirrored if person["left_handed"] else dominant
    if sign["two_handed"]:
        landmarks[:, other_slot : other_slot + 21] = dominant if person["left_handed"] else mirrored
    unseen = rng.random(frames) < 0.15
    unseen[: rng.integers(0, 4)] = True
    unseen[frames - rng.integers(0, 4) :] = True
    unseen[frames // 2] = False
    landmarks[unseen, 468:489] = landmarks[unseen, 522:543] = np.nan
    return landmarks


def _landmark_table(landmarks: np.ndarray, first_frame: int) -> pa.Table:
    """The Kaggle parquet layout: one row a landmark a frame, same column names and dtypes."""
    frames = len(landmarks)
    types = np.concatenate([[name] * size for name, (_, size) in LANDMARK_TYPES.items()])
    index = np.concatenate([np.arange(size) for _, size in LANDMARK_TYPES.values()])
    frame = np.repeat(np.arange(first_frame, first_frame + frames), LANDMARKS_PER_FRAME).astype(np.int16)
    type_column = pa.array(np.tile(types, frames))
    index_column = pa.array(np.tile(index, frames).astype(np.int16))
    row_id = pc.binary_join_element_wise(
        pc.cast(pa.array(frame), pa.string()), type_column, pc.cast(index_column, pa.string()), "-"
    )
    flat = landmarks.reshape(-1, 3).astype(np.float64)
    columns = {"frame": pa.array(frame), "row_id": row_id, "type": type_column, "landmark_index": index_column}
    columns.update({axis: pa.array(flat[:, i]) for i, axis in enumerate("xyz")})
    return pa.table(columns)


def _write_synthetic(folder: Path, cfg: Config) -> None:
    rng = np.random.default_rng(SYNTHETIC_VERSION)
    face, pose = _face_template(rng), rng.uniform([-0.2, 0.05], [0.2, 0.6], (33, 2))
    n = cfg.synthetic_signs
    signs = [
        {"freq": rng.integers(1, 4, 2), "phase": rng.uniform(0, 2 * np.pi, 2), "amp": rng.uniform(0.04, 0.12, 2),
         "curl": rng.uniform(0, 1, 5), "spin": rng.uniform(-1.5, 1.5), "height": rng.uniform(-0.1, 0.1),
         "two_handed": bool(rng.random() < 0.4)}
        for _ in range(n)
    ]
    people = [
        {"id": int(rng.integers(10_000, 65_000)), "centre": rng.uniform([0.42, 0.22], [0.58, 0.36]),
         "scale": rng.uniform(0.85, 1.15), "left_handed": k % 4 == 3, "frames": cfg.synthetic_frames}
        for k in range(max(1, cfg.synthetic_participants))
    ]
    labels = rng.permutation(np.arange(cfg.synthetic_sequences) % n)
    rows = []
    for k, label in enumerate(labels):
        person = people[k % len(people)]
        relative = f"train_landmark_files/{person['id']}/{1_000_000 + k}.parquet"
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        landmarks = _synthetic_sequence(signs[label], person, face, pose, rng)
        pq.write_table(_landmark_table(landmarks, int(rng.integers(0, 30))), folder / relative)
        rows.append({"path": relative, "participant_id": person["id"], "sequence_id": 1_000_000 + k,
                     "sign": f"sign{label:03d}"})
    pd.DataFrame(rows).to_csv(folder / "train.csv", index=False)
    names = {f"sign{i:03d}": i for i in range(n)}
    (folder / "sign_to_prediction_index_map.json").write_text(json.dumps(names))


def synthetic_dataset(cfg: Config) -> Path:
    """The cached synthetic set for cfg's synthetic_* fields, written once (temp dir, then rename)."""
    key = (f"synthetic-v{SYNTHETIC_VERSION}-signs{cfg.synthetic_signs}-seqs{cfg.synthetic_sequences}"
           f"-frames{cfg.synthetic_frames}-people{cfg.synthetic_participants}")
    folder = cache_root() / "asl" / key
    if folder.is_dir():
        return folder
    if cfg.synthetic_signs < 1 or cfg.synthetic_sequences < 2 * cfg.synthetic_signs or cfg.synthetic_frames < 2:
        raise UserError("synthetic_sequences must be at least twice synthetic_signs (>= 1), synthetic_frames >= 2")
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
    try:
        _write_synthetic(partial, cfg)
        partial.rename(folder)
    except OSError:
        if not folder.is_dir():  # not another process finishing first: a real failure
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


# ---------------------------------------------------------------- the model


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample while training."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        keep = x.new_empty(x.shape[0], *[1] * (x.dim() - 1)).bernoulli_(1 - self.rate)
        return x * keep / (1 - self.rate)


class ConvBlock(nn.Module):
    """Residual depthwise-separable temporal convolution; padded frames are zeroed so they never leak."""

    def __init__(self, dim: int, cfg: Config, dilation: int, dropout: float, drop_path: float):
        super().__init__()
        wide = dim * cfg.conv_expand
        self.norm, self.expand, self.project = nn.LayerNorm(dim), nn.Linear(dim, wide), nn.Linear(wide, dim)
        self.depthwise = nn.Conv1d(wide, wide, cfg.kernel_size, padding="same", dilation=dilation, groups=wide)
        self.dropout, self.drop_path = nn.Dropout(dropout), DropPath(drop_path)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.expand(self.norm(x))) * mask[..., None]
        h = F.silu(self.depthwise(h.transpose(1, 2)).transpose(1, 2))
        return x + self.drop_path(self.dropout(self.project(h)))


class AttentionBlock(nn.Module):
    """Pre-norm masked self-attention over time; with ffn_expand > 0 a Transformer block."""

    def __init__(self, dim: int, cfg: Config, drop_path: float, ffn_expand: int = 0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, cfg.heads, dropout=cfg.block_dropout, batch_first=True)
        self.dropout, self.drop_path = nn.Dropout(cfg.block_dropout), DropPath(drop_path)
        self.ffn = None
        if ffn_expand:
            self.ffn = nn.Sequential(
                nn.LayerNorm(dim), nn.Linear(dim, dim * ffn_expand), nn.GELU(),
                nn.Dropout(cfg.block_dropout), nn.Linear(dim * ffn_expand, dim),
            )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        h, _ = self.attention(h, h, h, key_padding_mask=~mask, need_weights=False)
        x = x + self.drop_path(self.dropout(h))
        return x if self.ffn is None else x + self.drop_path(self.dropout(self.ffn(x)))


class SignClassifier(nn.Module):
    """TCN -> BiLSTM -> self-attention -> Conv1D and Transformer blocks -> masked mean -> classes."""

    def __init__(self, cfg: Config, num_classes: int):
        super().__init__()
        dim = cfg.dim
        blocks = len(cfg.tcn_dilations) + 1 + cfg.conv_blocks + cfg.transformer_blocks
        rates = iter(np.linspace(0, cfg.drop_path, blocks).tolist())
        self.project = nn.Sequential(nn.Linear(NUM_FEATURES, dim), nn.LayerNorm(dim))
        self.tcn = nn.ModuleList(
            ConvBlock(dim, cfg, dilation, dropout, next(rates))
            for dilation, dropout in zip(cfg.tcn_dilations, cfg.tcn_dropouts, strict=True)
        )
        self.lstm_norm = nn.LayerNorm(dim)
        self.lstm = nn.LSTM(dim, dim // 2, cfg.lstm_layers, batch_first=True, bidirectional=True,
                            dropout=cfg.block_dropout if cfg.lstm_layers > 1 else 0.0)
        self.attention = AttentionBlock(dim, cfg, next(rates))
        self.convs = nn.ModuleList(ConvBlock(dim, cfg, 1, cfg.block_dropout, next(rates)) for _ in range(cfg.conv_blocks))
        self.transformers = nn.ModuleList(
            AttentionBlock(dim, cfg, next(rates), cfg.ffn_expand) for _ in range(cfg.transformer_blocks)
        )
        self.stage_dropout = nn.Dropout(cfg.adaptive_dropout_start)
        self.head_norm, self.late_dropout = nn.LayerNorm(dim), nn.Dropout(0.0)
        self.classifier = nn.Linear(dim, num_classes)

    def _lstm(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Packed so the backward direction starts at each sequence's last real frame, not the padding.
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.lstm_norm(x), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return x + out

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.bool()
        h = self.project(x)
        for block in self.tcn:
            h = block(h, mask)
        h = self.stage_dropout(self._lstm(self.stage_dropout(h), mask))
        h = self.stage_dropout(self.attention(h, mask))
        for block in [*self.convs, *self.transformers]:
            h = block(h, mask)
        weights = mask[..., None].to(h.dtype)
        pooled = (self.head_norm(h) * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        return self.classifier(self.late_dropout(pooled))


def build_model(cfg: Config, meta: dict) -> nn.Module:
    if cfg.dim % 2 or cfg.dim % cfg.heads:
        raise UserError(f"config key 'dim' ({cfg.dim}) must be even and divisible by heads ({cfg.heads})")
    if len(cfg.tcn_dilations) != len(cfg.tcn_dropouts):
        raise UserError("config keys 'tcn_dilations' and 'tcn_dropouts' must have the same length")
    return SignClassifier(cfg, len(meta["classes"]))


def dropout_schedule(epoch: int, cfg: Config) -> tuple[float, float]:
    """(stage dropout, late dropout) at an epoch (from 0): the adaptive ramp and the late switch."""
    ramp = min(epoch / cfg.adaptive_dropout_epochs, 1.0) if cfg.adaptive_dropout_epochs > 0 else 1.0
    adaptive = cfg.adaptive_dropout_start + (cfg.adaptive_dropout_end - cfg.adaptive_dropout_start) * ramp
    return adaptive, cfg.late_dropout if epoch >= cfg.late_dropout_epoch else 0.0


def on_epoch_start(model: nn.Module, epoch: int, cfg: Config) -> None:
    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    inner.stage_dropout.p, inner.late_dropout.p = dropout_schedule(epoch, cfg)


# ---------------------------------------------------------------- loss, evaluation, prediction


def loss(model: nn.Module, batch: dict[str, torch.Tensor], cfg: Config):
    logits = model(batch["x"], batch["mask"])
    value = F.cross_entropy(logits, batch["label"], label_smoothing=cfg.label_smoothing)
    accuracy = (logits.argmax(dim=1) == batch["label"]).float().mean()
    return value, {"loss": value.item(), "acc": accuracy.item()}


def evaluate(model: nn.Module, batches, cfg: Config) -> dict:
    """Plain cross-entropy (no smoothing), accuracy, top-5 accuracy and the confusion matrix."""
    total = correct = top5 = 0
    loss_sum, confusion = 0.0, None
    for batch in batches:
        logits, labels = model(batch["x"], batch["mask"]).float(), batch["label"]
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


def predict(model: nn.Module, inputs: list[str], cfg: Config, meta: dict) -> list[dict]:
    """Top-5 signs with probabilities for each landmark parquet file."""
    classes = meta["classes"]
    device = next(model.parameters()).device
    pairs = [extract_features(str(path), cfg.max_len) for path in inputs]
    x = torch.from_numpy(np.stack([p[0] for p in pairs])).to(device)
    mask = torch.from_numpy(np.stack([p[1] for p in pairs])).to(device)
    model.eval()
    with torch.no_grad():
        probs = model(x, mask).float().softmax(dim=1).cpu()
    top = probs.topk(min(5, len(classes)), dim=1)
    return [
        {"input": str(path), "top": [{"label": classes[i], "prob": float(p)} for p, i in zip(ps.tolist(), idx.tolist())]}
        for path, ps, idx in zip(inputs, top.values, top.indices)
    ]
