"""ASL landmark files: reading Kaggle "asl-signs" parquet files, the 744 features, the index.

Used by ``python -m platform.run asl --data DIR`` (in Ray Data preprocessing) and by
``python -m platform.predict RUN_DIR seq.parquet``. No Ray here: tests call it directly.

Bad input is a ``UserError`` naming the file: an empty or non-UTF-8 ``train.csv``, a path in it
outside DIR (checked when the index is read), a parquet file that is unreadable or has a missing
or mistyped column (found where it is read, in preprocessing).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from platform.data import locations
from platform.data.content_hash import content_hash
from platform.errors import UserError
from trainables.files import confined, read_csv, utf8_text

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


def _is_text(kind: pa.DataType) -> bool:
    # Writers store "type" as string, large_string or dictionary (pandas' category).
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_floating(kind) or pa.types.is_integer(kind)


# What read_landmarks can use of each column, and how an error message says it.
COLUMN_KINDS = {
    "frame": (pa.types.is_integer, "integers"),
    "type": (_is_text, "text"),
    "landmark_index": (pa.types.is_integer, "integers"),
    **{axis: (_is_number, "numbers") for axis in "xyz"},
}


def _check_schema(schema: pa.Schema, path: str) -> None:
    """Every landmark column present with a usable type, so a bad file names its column."""
    missing = [c for c in LANDMARK_COLUMNS if c not in schema.names]
    if missing:
        raise UserError(f"{path}: landmark file lacks column(s) {', '.join(missing)}")
    for name, (accepts, expected) in COLUMN_KINDS.items():
        kind = schema.field(name).type
        if not accepts(kind):
            raise UserError(f"{path}: landmark column {name!r} holds {kind}, expected {expected}")


def read_landmarks(path: str) -> np.ndarray:
    """[frames, 543, 3] float32 landmarks of one parquet file, NaN where not seen."""
    try:
        fs, inner = locations.filesystem(path)
        _check_schema(pq.read_schema(inner, filesystem=fs), path)
        table = pq.read_table(inner, filesystem=fs, columns=list(LANDMARK_COLUMNS))
    except (OSError, pa.ArrowException) as err:
        raise UserError(f"{path}: cannot read landmark parquet ({str(err).splitlines()[0]})") from None
    column = {name: table[name].to_numpy(zero_copy_only=False) for name in LANDMARK_COLUMNS if name != "type"}
    # Cast: writers store "type" as string, large_string or dictionary, and index_in needs one type.
    type_codes = pc.index_in(table["type"].cast(pa.string()), value_set=pa.array(list(LANDMARK_TYPES)))
    known = type_codes.is_valid().to_numpy(zero_copy_only=False)
    codes = type_codes.fill_null(0).to_numpy(zero_copy_only=False).astype(int)
    starts, sizes = np.array(list(LANDMARK_TYPES.values())).T
    index = column["landmark_index"].astype(int)
    known &= (index >= 0) & (index < sizes[codes])  # rows of unknown parts or indices are ignored
    frames, frame_pos = np.unique(column["frame"], return_inverse=True)
    xyz = np.stack([column[axis] for axis in "xyz"], axis=-1)
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


def frame_features(landmarks: np.ndarray, max_len: int) -> np.ndarray:
    """[frames, 744] float32 features of one sequence, at most ``max_len`` frames (unpadded).

    Frames before the first and after the last sighting of a hand are dropped (the sign happens
    between them); gaps inside stay, so timing survives. Unseen values are 0, and a hand that
    reappears gets no velocity spike because differences with a missing frame are 0 too. A longer
    sequence is resampled evenly down to ``max_len`` frames.
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
    features = np.clip(np.nan_to_num(features, nan=0.0), -FEATURE_CLIP, FEATURE_CLIP).astype(np.float32)
    if frames > max_len:
        features = features[np.linspace(0, frames - 1, max_len).round().astype(int)]
    return features


def sequence_features(landmarks: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """([max_len, 744] float32 features, [max_len] bool mask of real frames): padded."""
    features = frame_features(landmarks, max_len)
    padded = np.zeros((max_len, NUM_FEATURES), dtype=np.float32)
    padded[: len(features)] = features
    return padded, np.arange(max_len) < len(features)


def read_features(path: str, max_len: int) -> np.ndarray:
    """Unpadded features of one parquet file; a file the model cannot use is a UserError."""
    landmarks = read_landmarks(path)
    try:
        return frame_features(landmarks, max_len)
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None


def extract_features(path: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded features and mask of one parquet file (see :func:`sequence_features`)."""
    features = read_features(path, max_len)
    padded = np.zeros((max_len, NUM_FEATURES), dtype=np.float32)
    padded[: len(features)] = features
    return padded, np.arange(max_len) < len(features)


def _read_bytes(folder: locations.Folder, name: str) -> bytes:
    try:
        return folder.read_bytes(name)
    except OSError:
        raise UserError(f"{folder.shown(name)}: not found or unreadable") from None


def _read_train_csv(folder: locations.Folder) -> tuple[pd.DataFrame, bytes]:
    """train.csv, with each path confined to the data folder (lexically: it may be s3://)."""
    where = folder.shown("train.csv")
    raw = _read_bytes(folder, "train.csv")
    frame = read_csv(utf8_text(raw, where), where, INDEX_COLUMNS, dtype={"path": str, "sign": str})
    if frame[["path", "sign"]].isna().any().any():
        raise UserError(f"{where}: rows without path or sign")
    frame["path"] = [confined(path, where) for path in frame["path"]]
    return frame, raw


def _read_classes(folder: locations.Folder, signs: pd.Series) -> tuple[list[str], bytes]:
    """Classes in prediction-index order from the map if present, else the sorted signs."""
    if not folder.is_file("sign_to_prediction_index_map.json"):
        return sorted(signs.unique()), b""
    raw = _read_bytes(folder, "sign_to_prediction_index_map.json")
    try:
        mapping = json.loads(raw)
        if not isinstance(mapping, dict):  # a list would be indexed by its own items
            raise TypeError(type(mapping).__name__)
        classes = sorted(mapping, key=lambda sign: int(mapping[sign]))
    except (ValueError, TypeError, AttributeError, OverflowError):  # OverflowError: an index of 1e999
        raise UserError(f"{folder.shown('sign_to_prediction_index_map.json')}: not a sign -> index object") from None
    unknown = sorted(set(signs) - set(classes))
    if unknown:
        raise UserError(f"{folder.shown('train.csv')}: sign {unknown[0]!r} is not in sign_to_prediction_index_map.json")
    return classes, raw


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
    folder = locations.Folder(data_dir)
    if not folder.exists():
        raise UserError(f"{data_dir.rstrip('/')}: data folder not found")
    frame, csv_raw = _read_train_csv(folder)
    classes, map_raw = _read_classes(folder, frame["sign"])
    relative = frame["path"].tolist()
    present = folder.tree()
    for rel in relative:
        if rel not in present:
            raise UserError(f"{folder.shown('train.csv')} names a missing landmark file: {rel}")
    label_of = {sign: i for i, sign in enumerate(classes)}
    labels = [label_of[s] for s in frame["sign"]]
    is_val = stratified_split(labels, val_fraction, seed)
    rows = [{"path": folder.path(rel), "label": label} for rel, label in zip(relative, labels)]
    splits = {"train": [r for r, v in zip(rows, is_val) if not v], "val": [r for r, v in zip(rows, is_val) if v]}
    meta = {
        "classes": classes,
        "data_path": folder.location,
        # Relative names: the same files in another folder or bucket are the same data.
        "content_hash": content_hash([csv_raw, map_raw], {rel: folder.path(rel) for rel in relative}),
        "num_sequences": len(rows),
        "split_sizes": {name: len(split) for name, split in splits.items()},
    }
    return splits, meta
