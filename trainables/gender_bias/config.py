"""The gender-bias scorer's config, read without torch or the model by
``python -m platform.run gender_bias --help`` and ``--print-config`` (``platform/registry.py``)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from platform.config import TrainConfig

METRIC = ("val/mae", "min")


@dataclasses.dataclass
class Config(TrainConfig):
    """The seed's full recipe; tiers in ``search_spaces/gender_bias.py`` shrink it."""

    # The seed's training recipe, where it differs from the platform's defaults (documented there).
    epochs: int = 6
    lr: float = 5e-4
    patience: int = 2
    image_size: int = 224
    """Images are resized (shorter side) and centre-cropped to this many pixels square."""
    max_tokens: int = 128
    """Captions are tokenized, truncated and padded to this many tokens."""
    text_model: str = "auto"
    """Text encoder: auto (the local all-MiniLM-L6-v2, else tiny), tiny (small random BERT), or a local path or cached HF name."""
    frozen_layers: int = 3
    """Transformer layers of the text encoder frozen from the bottom (with its embeddings when > 0)."""
    image_weights: str = "auto"
    """Image encoder: auto (ResNet18 from the torch hub cache, else EfficientNet-Lite0 from its package), resnet18, efficientnet_lite0, none (random ResNet18), or a .pth path."""
    fusion_dim: int = 256
    """Width of the first fusion layer (the second is half of it)."""
    dropout: float = 0.3
    """Dropout after each hidden fusion layer."""
    val_fraction: float = 0.2
    """Share of the posts held out for validation (a seeded shuffle)."""
    max_samples: int = 0
    """Posts used, a seeded sample taken before the split; 0: all (the seed's modes capped at 2000 or 5000)."""
    synthetic_samples: int = 2000
    """Synthetic set (no data_dir): number of posts."""

    # frozen_layers has no highest: it depends on the text model (build_model checks it).
    LIMITS: ClassVar[dict] = {
        "image_size": (16, None),  # the encoders downsample 32x; smaller images leave them nothing to see
        # [CLS], [SEP] and one word (at 1 the tokenizer returns ragged rows); the text encoders hold 512 positions.
        "max_tokens": (3, 512),
        "frozen_layers": (0, None),
        "fusion_dim": (2, None),  # the second fusion layer is half as wide
        "dropout": (0, 0.99),
        "val_fraction": (0.01, 0.9),
        "max_samples": (0, None),
        "synthetic_samples": (4, None),
    }
