"""The synthetic gender-bias set: a labeler-layout folder whose scores follow image and caption.

Written once, cached, by ``python -m platform.run gender_bias`` when no ``--data`` is given:
``labels.csv`` (the labeler's columns, ``image_path`` relative) and ``images/*.jpg``.

The score is 5, plus 2.5 for a stereotyping caption template or minus 2.5 for a neutral one, plus
1.5 for a warm-coloured shape or minus 1.5 for a cool one, plus 0.5 for a circle or minus 0.5 for a
square, plus noise (sd 0.4), clipped to 0..10. Predicting from the caption alone leaves an MAE of
about 1.5, from the image alone about 2.5; a model that reads both can get down to the noise (0.3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from platform.data.cache import cache_root, write_once
from platform.errors import UserError
from trainables.gender_bias.data import LABEL_COLUMNS

SYNTHETIC_VERSION = 1
IMAGE_PIXELS = 64

STEREOTYPED = (
    "Real men never cry, not even at the {place}",
    "Girls are too delicate for {activity}",
    "Boys will be boys at the {place}",
    "A woman's place is at home, not at the {place}",
    "Leave the {activity} to the guys, ladies",
)
NEUTRAL = (
    "Everyone had a great time at the {place}",
    "Our team tried {activity} together today",
    "Friends enjoying an afternoon at the {place}",
    "Anyone can learn {activity} with a bit of practice",
    "A quiet morning at the {place}",
)
PLACES = ("beach", "office", "gym", "park", "lake", "workshop", "stadium", "library")
ACTIVITIES = ("climbing", "coding", "cooking", "football", "sailing", "chess", "welding", "dancing")
WARM = ((220, 60, 40), (240, 140, 30), (230, 80, 150))
COOL = ((40, 90, 220), (30, 170, 160), (90, 60, 200))


def _draw(rng: np.random.Generator, warm: bool, circle: bool) -> Image.Image:
    """A muted background with one coloured shape of random size and place."""
    background = tuple(int(v) for v in rng.integers(90, 170, 3))
    image = Image.new("RGB", (IMAGE_PIXELS, IMAGE_PIXELS), background)
    colour = np.array((WARM if warm else COOL)[rng.integers(3)]) + rng.integers(-20, 21, 3)
    half = int(rng.integers(12, 24))
    cx, cy = (int(v) for v in rng.integers(half, IMAGE_PIXELS - half, 2))
    box = (cx - half, cy - half, cx + half, cy + half)
    draw = ImageDraw.Draw(image)
    fill = tuple(int(v) for v in np.clip(colour, 0, 255))
    (draw.ellipse if circle else draw.rectangle)(box, fill=fill)
    return image


def _write_synthetic(folder: Path, samples: int) -> None:
    rng = np.random.default_rng(SYNTHETIC_VERSION)
    (folder / "images").mkdir()
    rows = []
    for k in range(samples):
        stereotyped, warm, circle = (bool(v) for v in rng.integers(0, 2, 3))
        template = (STEREOTYPED if stereotyped else NEUTRAL)[rng.integers(5)]
        caption = template.format(place=PLACES[rng.integers(len(PLACES))], activity=ACTIVITIES[rng.integers(len(ACTIVITIES))])
        score = 5 + 2.5 * (1 if stereotyped else -1) + 1.5 * (1 if warm else -1) + 0.5 * (1 if circle else -1)
        score = float(np.clip(score + rng.normal(0, 0.4), 0, 10))
        relative = f"images/syn{k:06d}.jpg"
        _draw(rng, warm, circle).save(folder / relative, quality=90)
        rows.append(
            {
                "post_id": f"syn{k:06d}",
                "image_path": relative,
                "caption": caption,
                "score": round(score, 3),
                "reason": f"synthetic: {'stereotyped' if stereotyped else 'neutral'} caption, "
                f"{'warm' if warm else 'cool'} {'circle' if circle else 'square'}",
                "model": "synthetic",
                "prompt_version": f"synthetic-v{SYNTHETIC_VERSION}",
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "cost_usd": 0.0,
                "latency_s": 0.0,
                "cached": False,
            }
        )
    pd.DataFrame(rows, columns=list(LABEL_COLUMNS)).to_csv(folder / "labels.csv", index=False)


def synthetic_dataset(cfg: Any) -> Path:
    """The cached synthetic set of cfg.synthetic_samples posts, written once (temp dir, then rename)."""
    key = f"synthetic-v{SYNTHETIC_VERSION}-posts{cfg.synthetic_samples}"
    if cfg.synthetic_samples < 4:
        raise UserError("config key 'synthetic_samples' must be at least 4")
    folder = cache_root() / "gender_bias" / key
    return write_once(folder, lambda partial: _write_synthetic(partial, cfg.synthetic_samples))
