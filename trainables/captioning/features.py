"""Image features: a ResNet18 forward pass over a batch of image files, once per data set.

Run inside Ray Data by ``python -m platform.run captioning`` (``preprocess``; the platform caches
its output beside the data, see ``PREPROCESS_KEYS``) and by ``python -m platform.predict RUN_DIR
image.jpg``. The seed pre-extracted InceptionV3 features; ResNet18 is the platform's offline
encoder (``trainables/pretrained.py``): ImageNet weights from the torch hub cache, else a random
initialisation from a fixed seed, so that training and predict see the same features.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from trainables.pretrained import IMAGENET_MEAN, IMAGENET_STD, build_image_encoder, load_image

FEATURE_DIM = 512
RANDOM_ENCODER_SEED = 0


def describe(weights_source: str) -> str:
    """The encoder a run used, in words, for meta.json and the run log."""
    if weights_source == "none":
        return f"ResNet18, random initialisation (seed {RANDOM_ENCODER_SEED}): no ImageNet weights in the torch hub cache"
    return f"ResNet18, ImageNet weights from {weights_source}"


@functools.lru_cache(maxsize=2)
def load_encoder(weights_source: str) -> nn.Module:
    """Once per process (a Ray Data worker calls ``preprocess`` once a batch)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_ENCODER_SEED)
        encoder = build_image_encoder(weights_source)
    return encoder.eval()


def normalised_image(path: str, size: int) -> np.ndarray:
    """[3, size, size] float32, ImageNet-normalised, as the encoder was trained."""
    pixels = load_image(path, size).astype(np.float32) / 255
    mean, std = (np.array(v, np.float32).reshape(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    return (pixels - mean) / std


def extract(paths, size: int, weights_source: str) -> np.ndarray:
    """float32 [N, 512]: the encoder's globally pooled features of each image file."""
    if len(paths) == 0:
        return np.zeros((0, FEATURE_DIM), np.float32)
    pixels = torch.from_numpy(np.stack([normalised_image(str(path), size) for path in paths]))
    with torch.no_grad():
        return load_encoder(weights_source)(pixels).numpy().astype(np.float32)
