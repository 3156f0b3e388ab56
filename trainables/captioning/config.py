"""The image captioner's config, read without torch or the model by
``python -m platform.run captioning --help`` and ``--print-config`` (``platform/registry.py``)."""

from __future__ import annotations

import dataclasses

from platform.config import TrainConfig, limited

# CIDEr-D, not BLEU-4: generic captions score BLEU-4 as well as image-specific ones. On 24 real
# Flickr8k validation images BLEU-4 preferred an epoch writing 54% distinct captions (0.089) to a
# later one writing 83% (0.087), whose CIDEr-D was 0.235 against 0.144.
METRIC = ("val/cider", "max")
# A new vocabulary (vocab_size, max_len, min_word_count) changes the rows' token ids, and other
# encoder weights the rows' image_encoder, hence the cache key as well; image_weights itself is not a
# key: "auto" and the path it resolves to give the same features.
PREPROCESS_KEYS = ("image_size",)


@dataclasses.dataclass
class Config(TrainConfig):
    """The seed's optimized mode; tiers in ``search_spaces/captioning.py`` shrink it."""

    # The seed's training recipe, where it differs from the platform's defaults (documented there).
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    grad_clip: float = 5.0
    patience: int = 5
    embed_dim: int = limited(256, low=1)
    """Word embedding size."""
    hidden_dim: int = limited(384, low=1)
    """LSTM hidden size."""
    dropout: float = limited(0.3, low=0, high=0.99)
    """Dropout on the image features, the word embeddings and the LSTM outputs."""
    vocab_size: int = limited(8000, low=5)  # the 4 special tokens and at least one word
    """Vocabulary size, the 4 special tokens included: the most frequent training words."""
    min_word_count: int = limited(1, low=1)
    """Training-caption occurrences a word needs to enter the vocabulary."""
    max_len: int = limited(25, low=1)
    """Words a caption keeps in training, and at most generated."""
    beam_width: int = limited(3, low=1)
    """Beam width of validation and predict captions; 1 is greedy decoding."""
    length_penalty: float = limited(0.7, low=0, high=5)
    """GNMT length penalty alpha of beam search: scores are divided by ((5 + length) / 6) ** alpha; 0 favours short captions."""
    label_smoothing: float = limited(0.1, low=0, high=0.99)
    """Label smoothing of the training cross entropy (keeps the decoder from betting everything on the commonest words)."""
    image_size: int = limited(224, low=16)  # the encoders downsample 32x; smaller images leave them nothing to see
    """Images are resized (shorter side) and centre-cropped to this many pixels square for the CNN."""
    image_weights: str = "auto"
    """Image encoder: auto (ResNet18 from the torch hub cache, else EfficientNet-Lite0 from its package), resnet18, efficientnet_lite0, none (random ResNet18), or a .pth path."""
    val_fraction: float = limited(0.1, low=0.01, high=0.9)
    """Share of the images held out for validation when the data has no split lists."""
    test_fraction: float = limited(0.1, low=0, high=0.9)  # val must not be empty; test may be
    """Share of the images held out for the test split when the data has no split lists."""
    synthetic_images: int = limited(2000, low=10, synthetic=True)
    """Synthetic set (no data_dir): number of images (five captions each)."""
