"""The synthetic ASL set: Kaggle-layout parquet files whose signs are learnable wrist paths and hand shapes.

Written once, cached, by ``python -m platform.run asl`` when no ``--data`` is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from platform.data.cache import cache_root, write_once
from platform.errors import UserError
from trainables.asl.landmarks import FACE_POINTS, LANDMARK_TYPES, LANDMARKS_PER_FRAME

SYNTHETIC_VERSION = 2


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
    row_id = pc.binary_join_element_wise(pc.cast(pa.array(frame), pa.string()), type_column, pc.cast(index_column, pa.string()), "-")
    flat = landmarks.reshape(-1, 3).astype(np.float64)
    xyz = {axis: pa.array(flat[:, i]) for i, axis in enumerate("xyz")}
    return pa.table({"frame": pa.array(frame), "row_id": row_id, "type": type_column, "landmark_index": index_column, **xyz})


def _write_synthetic(folder: Path, cfg: Any) -> None:
    rng = np.random.default_rng(SYNTHETIC_VERSION)
    face, pose = _face_template(rng), rng.uniform([-0.2, 0.05], [0.2, 0.6], (33, 2))
    n = cfg.synthetic_signs
    signs = [
        {
            "freq": rng.integers(1, 4, 2),
            "phase": rng.uniform(0, 2 * np.pi, 2),
            "amp": rng.uniform(0.04, 0.12, 2),
            "curl": rng.uniform(0, 1, 5),
            "spin": rng.uniform(-1.5, 1.5),
            "height": rng.uniform(-0.1, 0.1),
            "two_handed": bool(rng.random() < 0.4),
        }
        for _ in range(n)
    ]
    people = [
        {
            "id": int(rng.integers(10_000, 65_000)),
            "centre": rng.uniform([0.42, 0.22], [0.58, 0.36]),
            "scale": rng.uniform(0.85, 1.15),
            "left_handed": k % 4 == 3,
            "frames": cfg.synthetic_frames,
        }
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
        rows.append({"path": relative, "participant_id": person["id"], "sequence_id": 1_000_000 + k, "sign": f"sign{label:03d}"})
    pd.DataFrame(rows).to_csv(folder / "train.csv", index=False)
    names = {f"sign{i:03d}": i for i in range(n)}
    (folder / "sign_to_prediction_index_map.json").write_text(json.dumps(names))


def synthetic_dataset(cfg: Any) -> Path:
    """The cached synthetic set for cfg's synthetic_* fields, written once (temp dir, then rename)."""
    key = (
        f"synthetic-v{SYNTHETIC_VERSION}-signs{cfg.synthetic_signs}-seqs{cfg.synthetic_sequences}"
        f"-frames{cfg.synthetic_frames}-people{cfg.synthetic_participants}"
    )
    if not 1 <= 2 * cfg.synthetic_signs <= cfg.synthetic_sequences or cfg.synthetic_frames < 2:
        raise UserError("synthetic set: need synthetic_signs >= 1, synthetic_sequences >= 2 * synthetic_signs and synthetic_frames >= 2")
    return write_once(cache_root() / "asl" / key, lambda partial: _write_synthetic(partial, cfg))
