"""A synthetic asl-signs set whose sequence lengths follow the real data's, for bench/data_scale.py.

Imported by ``python -m bench.data_scale``; not a benchmark itself.

220 real Kaggle sequences measured: mean about 32 frames, median 17, p95 115, max 240. A lognormal
with median 17 and sigma 1.17, rounded and clipped to [2, 240], fits them (mean 31, median 17, p95
116, about 1% at the 240 cap; sigma 1.05 gives mean 29 and p95 95). trainables/asl/synthetic.py's
lengths are uniform around a mean instead, which hides what unpadded storage and length buckets save.

Landmarks are a random walk around a fixed face and body (learnability does not matter here). The
right hand is seen in every frame, since the feature extractor drops the frames before the first
and after the last sighting of a hand, so a sequence's feature length is its frame count; the left
hand is never seen (one-handed signing), so a third of the features are zeros, as in much real data. Files live in
one pool under the platform cache, each written from its own seed, so a set of N sequences is the
pool's first N (a folder with its own train.csv and a link to the pool): a larger size writes only
the files it adds, and a rerun writes nothing.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from platform.data.cache import cache_root
from trainables.asl.landmarks import LANDMARK_TYPES, LANDMARKS_PER_FRAME

VERSION = 1
MEDIAN_FRAMES, SIGMA, MIN_FRAMES, MAX_FRAMES = 17, 1.17, 2, 240
SIGNS, PARTICIPANTS = 10, 8


def sample_lengths(count: int, seed: int = VERSION) -> np.ndarray:
    """Frames of sequences 0..count-1; sequence k's length depends on k alone (a pool's prefix)."""
    return np.array([_length(k, seed) for k in range(count)], dtype=np.int64)


def _length(k: int, seed: int) -> int:
    draw = np.random.default_rng([seed, k]).lognormal(np.log(MEDIAN_FRAMES), SIGMA)
    return int(np.clip(np.rint(draw), MIN_FRAMES, MAX_FRAMES))


def length_stats(lengths: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(np.mean(lengths)),
        "median": float(np.median(lengths)),
        "p95": float(np.percentile(lengths, 95)),
        "max": float(np.max(lengths)),
    }


def _landmarks(k: int, frames: int) -> np.ndarray:
    """[frames, 543, 3]: a fixed body plus a small random walk; the left hand unseen, as when one
    hand signs."""
    rng = np.random.default_rng([VERSION, k, 1])
    base = np.random.default_rng(VERSION).uniform(0.3, 0.7, (LANDMARKS_PER_FRAME, 3))
    walk = np.cumsum(rng.normal(0, 0.003, (frames, LANDMARKS_PER_FRAME, 3)), axis=0)
    landmarks = base + walk
    landmarks[:, 468:489] = np.nan
    return landmarks


def _frame_template() -> tuple[pa.Array, np.ndarray, pa.Array]:
    """One frame's type, landmark_index and row_id suffix ("-face-0"...), taken once a frame."""
    types = pa.array([name for name, (_, size) in LANDMARK_TYPES.items() for _ in range(size)])
    index = np.concatenate([np.arange(size) for _, size in LANDMARK_TYPES.values()]).astype(np.int16)
    suffix = pc.binary_join_element_wise(pa.array([""] * len(index)), types, pc.cast(pa.array(index), pa.string()), "-")
    return types, index, suffix


TYPES, INDEX, SUFFIX = _frame_template()


def landmark_table(landmarks: np.ndarray, first_frame: int) -> pa.Table:
    """The Kaggle parquet layout (frame, row_id, type, landmark_index, x, y, z; doubles holding
    float32 values, as MediaPipe's are), built by Arrow kernels: trainables/asl/synthetic.py's
    writer converts 17k Python strings a file, about 15x slower, which would dominate --full's set-up."""
    frames = len(landmarks)
    position = np.tile(np.arange(LANDMARKS_PER_FRAME), frames)
    frame = np.repeat(np.arange(first_frame, first_frame + frames), LANDMARKS_PER_FRAME).astype(np.int16)
    row_id = pc.binary_join_element_wise(pc.cast(pa.array(frame), pa.string()), SUFFIX.take(position), "")
    xyz = landmarks.reshape(-1, 3).astype(np.float32).astype(np.float64)
    return pa.table(
        {
            "frame": frame,
            "row_id": row_id,
            "type": TYPES.take(position),
            "landmark_index": INDEX[position],
            "x": xyz[:, 0],
            "y": xyz[:, 1],
            "z": xyz[:, 2],
        }
    )


def _relative(k: int) -> str:
    return f"{10_000 + k % PARTICIPANTS}/{1_000_000 + k}.parquet"


def _write_one(args: tuple[Path, int, int]) -> None:
    pool, k, frames = args
    target = pool / _relative(k)
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    # Dictionaries only where values repeat: trying them on random doubles costs several times the write.
    pq.write_table(landmark_table(_landmarks(k, frames), k % 7), partial, use_dictionary=["frame", "type", "landmark_index"])
    partial.rename(target)  # whole files only: a killed writer leaves no half file under the name


def dataset(count: int, processes: int, say=print) -> Path:
    """The folder of the set of ``count`` sequences (Kaggle layout), writing the files it lacks."""
    root = cache_root() / "bench-data-scale" / f"v{VERSION}"
    pool, folder = root / "pool", root / f"n{count}"
    lengths = sample_lengths(count)
    missing = [(pool, k, int(n)) for k, n in enumerate(lengths) if not (pool / _relative(k)).exists()]
    if missing:
        say(f"[data_scale] writing {len(missing)} landmark files into {pool}")
        # fork: the children inherit the imports (and this repo's `platform`) instead of redoing them
        with multiprocessing.get_context("fork").Pool(processes) as workers:
            workers.map(_write_one, missing, chunksize=8)
    if not (folder / "train.csv").exists():
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / "train_landmark_files"
        if not link.exists():
            link.symlink_to("../pool", target_is_directory=True)
        rows = [
            {
                "path": f"train_landmark_files/{_relative(k)}",
                "participant_id": 10_000 + k % PARTICIPANTS,
                "sequence_id": 1_000_000 + k,
                "sign": f"sign{k % SIGNS:03d}",
            }
            for k in range(count)
        ]
        (folder / "sign_to_prediction_index_map.json").write_text(json.dumps({f"sign{i:03d}": i for i in range(SIGNS)}))
        partial = folder / "train.csv.partial"
        pd.DataFrame(rows).to_csv(partial, index=False)
        partial.rename(folder / "train.csv")  # written last: a folder with train.csv is complete
    return folder
