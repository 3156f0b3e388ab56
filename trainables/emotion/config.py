"""The MELD emotion classifier's config, read without torch or the model by
``python -m platform.run emotion --help`` and ``--print-config`` (``platform/registry.py``)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from platform.config import TrainConfig, limited

METRIC = ("val/weighted_f1", "max")
PREPROCESS_KEYS = ("text_model", "max_tokens", "context_turns", "sample_rate", "n_mels", "audio_seconds", "frames", "frame_size")


@dataclasses.dataclass
class Config(TrainConfig):
    """The seed's full recipe; tiers in ``search_spaces/emotion.py`` shrink it."""

    # The seed's training recipe, where it differs from the platform's defaults (documented there).
    epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-4
    grad_clip: float = 1.0
    patience: int = 3
    # Most lowest values below are the ones clip_shape, build_model and synthetic_dataset check again later.
    tasks: Literal["emotion", "sentiment", "emotion,sentiment"] = "emotion,sentiment"
    """Heads trained: emotion, sentiment, or emotion,sentiment (the emotion head picks the best model when on)."""
    sentiment_weight: float = limited(0.5, low=0)
    """Weight of the sentiment loss beside the emotion loss when both heads train."""
    balance: Literal["weights", "sqrt_weights", "oversample", "none"] = "weights"
    """Class imbalance: weights (inverse frequency in the loss), sqrt_weights (its square root), oversample (train rows, seeded) or none."""
    modalities: Literal["text", "text,audio", "text,video", "text,audio,video"] = "text,audio,video"
    """Modalities the model reads: text, text,audio or text,audio,video (the unimodal baseline is text)."""
    fusion: Literal["concat", "attention"] = "attention"
    """How the modality vectors combine: concat (concatenation) or attention (self-attention across them)."""
    fusion_dim: int = limited(256, low=4)
    """Width of every modality's projection and of the fused hidden layer."""
    dropout: float = limited(0.3, low=0, high=0.99)
    """Dropout in the fusion and before the heads."""
    modality_dropout: float = limited(0.1, low=0, high=0.99)
    """Training only: chance that a modality of a row is masked (a row that loses all keeps its text)."""
    text_model: str = "auto"
    """Text encoder: auto (the local all-MiniLM-L6-v2, else tiny), tiny (small random BERT), or a local path or cached HF name."""
    # Lowest: [CLS], [SEP] and one word (at 1 the tokenizer returns ragged rows); highest: the text encoders hold 512 positions.
    max_tokens: int = limited(64, low=3, high=512)
    """Utterance and context are tokenized, truncated (the context first) and padded to this many tokens."""
    context_turns: int = limited(0, low=0)
    """Previous utterances of the dialogue, speaker-tagged, read before the utterance; 0: the utterance alone."""
    frozen_layers: int = limited(3, low=0)  # no highest: it depends on the text model (build_model checks it)
    """Transformer layers of the text encoder frozen from the bottom (with its embeddings when > 0)."""
    image_weights: str = "auto"
    """Video frame encoder: auto (ResNet18 from the torch hub cache, else EfficientNet-Lite0 from its package), resnet18, efficientnet_lite0, none (random ResNet18), or a .pth path."""
    audio_width: int = limited(64, low=1)
    """Channels of the audio CNN's first block, doubling in each of its four (VGGish: 64)."""
    sample_rate: int = limited(16000, low=4000)
    """Audio is resampled to this rate (Hz) before the mel spectrogram."""
    n_mels: int = limited(64, low=8)
    """Mel bands of the spectrogram (VGGish: 64)."""
    audio_seconds: float = limited(3.0, low=0.025)  # one 25 ms analysis window of the log-mel spectrogram
    """Seconds of audio from the clip's start (zero-padded): MELD's utterances average 3.6 s."""
    frames: int = limited(4, low=1)
    """Video frames sampled evenly over the clip."""
    frame_size: int = limited(112, low=16)
    """Frames are resized (shorter side) and centre-cropped to this many pixels square."""
    max_rows: int = limited(0, low=0)
    """Rows read from each split's CSV, in file order; 0: all."""
    synthetic_clips: int = limited(600, low=12, synthetic=True)
    """Synthetic set (no data_dir): utterances over the three splits (70/15/15)."""
