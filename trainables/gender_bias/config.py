"""The gender-bias scorer's config, read without torch or the model by
``python -m platform.run gender_bias --help`` and ``--print-config`` (``platform/registry.py``)."""

from __future__ import annotations

import dataclasses

from platform.config import TrainConfig, limited

METRIC = ("val/mae", "min")


@dataclasses.dataclass
class Config(TrainConfig):
    """The seed's full recipe; tiers in ``search_spaces/gender_bias.py`` shrink it."""

    # The seed's training recipe, where it differs from the platform's defaults (documented there).
    epochs: int = 6
    lr: float = 5e-4
    patience: int = 2
    image_size: int = limited(224, low=16)  # the encoders downsample 32x; smaller images leave them nothing to see
    """Images are resized (shorter side) and centre-cropped to this many pixels square."""
    # Lowest: [CLS], [SEP] and one word (at 1 the tokenizer returns ragged rows); highest: the text encoders hold 512 positions.
    max_tokens: int = limited(128, low=3, high=512)
    """Captions are tokenized, truncated and padded to this many tokens."""
    text_model: str = "auto"
    """Text encoder: auto (the local all-MiniLM-L6-v2, else tiny), tiny (small random BERT), or a local path or cached HF name."""
    frozen_layers: int = limited(3, low=0)  # no highest: it depends on the text model (build_model checks it)
    """Transformer layers of the text encoder frozen from the bottom (with its embeddings when > 0)."""
    image_weights: str = "auto"
    """Image encoder: auto (ResNet18 from the torch hub cache, else EfficientNet-Lite0 from its package), resnet18, efficientnet_lite0, none (random ResNet18), or a .pth path."""
    fusion_dim: int = limited(256, low=2)  # the second fusion layer is half as wide
    """Width of the first fusion layer (the second is half of it)."""
    dropout: float = limited(0.3, low=0, high=0.99)
    """Dropout after each hidden fusion layer."""
    val_fraction: float = limited(0.2, low=0.01, high=0.9)
    """Share of the posts held out for validation (a seeded shuffle)."""
    max_samples: int = limited(0, low=0)
    """Posts used, a seeded sample taken before the split; 0: all (the seed's modes capped at 2000 or 5000)."""
    synthetic_samples: int = limited(2000, low=4, synthetic=True)
    """Synthetic set (no data_dir): number of posts."""
