"""Image features: the chosen image encoder's pooled features of a batch of image files, once per data set.

Run inside Ray Data by ``python -m platform.run captioning`` (``preprocess``; the platform caches
its output in the store, keyed by the rows, which carry the encoder's identity) and by
``python -m platform.predict RUN_DIR image.jpg``. The seed pre-extracted InceptionV3 features; the
platform's offline encoders are ResNet18 and EfficientNet-Lite0 (``trainables/image_encoders.py``).
A random initialisation draws from a fixed seed, so that training and predict see the same features.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from trainables.image_encoders import ImageEncoder, build_encoder, from_identity
from trainables.pretrained import load_image

RANDOM_ENCODER_SEED = 0


@functools.lru_cache(maxsize=2)
def load_encoder(identity: str, image_weights: str) -> ImageEncoder:
    """Once per process (a Ray Data worker calls ``preprocess`` once a batch). The weights must be
    the ones ``identity`` names: features of other weights would be stored under its key."""
    choice = from_identity(identity, image_weights, required=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_ENCODER_SEED)
        encoder = build_encoder(choice)
    return encoder.eval()


def extract(paths, size: int, identity: str, image_weights: str) -> np.ndarray:
    """float32 [N, dim]: the encoder's globally pooled features of each image file."""
    encoder = load_encoder(identity, image_weights)
    if len(paths) == 0:
        return np.zeros((0, encoder.dim), np.float32)
    pixels = torch.from_numpy(np.stack([load_image(str(path), size) for path in paths]))
    with torch.no_grad():
        return encoder(pixels).numpy().astype(np.float32)
