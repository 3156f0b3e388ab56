"""The synthetic captioning set: a Flickr8k-layout folder of drawn shapes and captions describing them.

Written once, cached under ``cache_root()/captioning/``, by ``python -m platform.run captioning``
when no ``--data`` is given: ``captions.txt`` (header ``image,caption``, five captions an image)
and ``Images/*.jpg``, split by image with a seeded shuffle as a Flickr8k copy without split lists.

Each image is one shape (circle, square, triangle) of one colour (red, green, blue, yellow) and
size (small, large) on a light or dark background. Its five captions are five different templates
naming those attributes, with synonyms (big/large, little/small, box/square...), so a model that
reads the colour, the shape and the size from the image can score a high BLEU against them.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from platform.data.cache import cache_root, write_once
from platform.errors import UserError

SYNTHETIC_VERSION = 1
IMAGE_PIXELS = 64
CAPTIONS_PER_IMAGE = 5

COLOURS = {"red": (215, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40)}
BACKGROUNDS = {"white": (235, 235, 235), "black": (25, 25, 25)}
SHAPES = ("circle", "square", "triangle")
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
SHAPE_WORDS = {"circle": ("circle", "round disc"), "square": ("square", "box"), "triangle": ("triangle",)}
TEMPLATES = (
    "a {size} {colour} {shape} on a {background} background",
    "a {colour} {shape}",
    "there is a {size} {colour} {shape}",
    "a {size} {shape} that is {colour}",
    "one {colour} {shape} on {background}",
    "a {shape} coloured {colour} on a {background} background",
    "a picture of a {size} {colour} {shape}",
)


def _draw(shape: str, colour: str, large: bool, background: str, rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (IMAGE_PIXELS, IMAGE_PIXELS), BACKGROUNDS[background])
    half = int(rng.integers(20, 28)) if large else int(rng.integers(7, 12))
    cx, cy = (int(v) for v in rng.integers(half + 2, IMAGE_PIXELS - half - 2, 2))
    fill = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + rng.integers(-20, 21, 3), 0, 255))
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse((cx - half, cy - half, cx + half, cy + half), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
    else:
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=fill)
    return image


def _captions(shape: str, colour: str, large: bool, background: str, rng: np.random.Generator) -> list[str]:
    sizes, shapes = SIZE_WORDS["large" if large else "small"], SHAPE_WORDS[shape]
    chosen = rng.choice(len(TEMPLATES), CAPTIONS_PER_IMAGE, replace=False)
    return [
        TEMPLATES[k].format(
            size=sizes[rng.integers(len(sizes))], shape=shapes[rng.integers(len(shapes))], colour=colour, background=background
        )
        for k in chosen
    ]


def _write_synthetic(folder: Path, images: int) -> None:
    rng = np.random.default_rng(SYNTHETIC_VERSION)
    (folder / "Images").mkdir()
    with open(folder / "captions.txt", "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["image", "caption"])
        for k in range(images):
            shape = SHAPES[rng.integers(len(SHAPES))]
            colour = list(COLOURS)[rng.integers(len(COLOURS))]
            background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
            large = bool(rng.integers(2))
            name = f"syn{k:05d}.jpg"
            _draw(shape, colour, large, background, rng).save(folder / "Images" / name, quality=90)
            writer.writerows([name, caption] for caption in _captions(shape, colour, large, background, rng))


def synthetic_dataset(cfg: Any) -> Path:
    """The cached synthetic set of cfg.synthetic_images images, written once (temp dir, then rename)."""
    if cfg.synthetic_images < 10:
        raise UserError("config key 'synthetic_images' must be at least 10")
    folder = cache_root() / "captioning" / f"synthetic-v{SYNTHETIC_VERSION}-images{cfg.synthetic_images}"
    return write_once(folder, lambda partial: _write_synthetic(partial, cfg.synthetic_images))
