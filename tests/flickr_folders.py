"""What the captioning tests share: a tiny Flickr8k folder in either caption layout, and a batch
preprocessed as the Train workers do.

    .venv/bin/python -m pytest tests/test_captioning.py tests/test_captioning_data.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainables import captioning as cap

CAPTIONS = {
    "a.jpg": ["A dog runs .", "A brown dog , running on grass .", "Dog running"],
    "b.jpg": ["Two children play in the park .", "Kids playing outside"],
    "c.jpg": ["A red car", "A car parked on the street ."],
    "d.jpg": ["A man rides a bike", "Someone cycling"],
}


def jpeg(path: Path, colour=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path)


def write_folder(root: Path, layout: str, captions=CAPTIONS, images="Images") -> Path:
    for k, name in enumerate(captions):
        jpeg(root / images / name, (40 * k, 100, 200))
    if layout == "csv":
        lines = ["image,caption"] + [f'{name},"{c}"' for name, cs in captions.items() for c in cs]
        (root / "captions.txt").write_text("\n".join(lines) + "\n")
    else:
        lines = [f"{name}#{n}\t{c}" for name, cs in captions.items() for n, c in enumerate(cs)]
        (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    return root


def torch_batch(rows: list[dict], cfg) -> dict[str, torch.Tensor]:
    raw = {key: np.array([row[key] for row in rows]) for key in rows[0]}
    return {key: torch.from_numpy(value) for key, value in cap.preprocess(raw, cfg).items()}
