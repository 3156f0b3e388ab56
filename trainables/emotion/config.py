"""The MELD emotion classifier's config, read without torch or the model by
``python -m platform.run emotion --help`` and ``--print-config`` (``platform/registry.py``)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from platform.config import TrainConfig

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
    tasks: Literal["emotion", "sentiment", "emotion,sentiment"] = "emotion,sentiment"
    """Heads trained: emotion, sentiment, or emotion,sentiment (the emotion head picks the best model when on)."""
    sentiment_weight: float = 0.5
    """Weight of the sentiment loss beside the emotion loss when both heads train."""
    balance: Literal["weights", "sqrt_weights", "oversample", "none"] = "weights"
    """Class imbalance: weights (inverse frequency in the loss), sqrt_weights (its square root), oversample (train rows, seeded) or none."""
    modalities: Literal["text", "text,audio", "text,video", "text,audio,video"] = "text,audio,video"
    """Modalities the model reads: text, text,audio or text,audio,video (the unimodal baseline is text)."""
    fusion: Literal["concat", "attention"] = "attention"
    """How the modality vectors combine: concat (concatenation) or attention (self-attention across them)."""
    fusion_dim: int = 256
    """Width of every modality's projection and of the fused hidden layer."""
    dropout: float = 0.3
    """Dropout in the fusion and before the heads."""
    modality_dropout: float = 0.1
    """Training only: chance that a modality of a row is masked (a row that loses all keeps its text)."""
    text_model: str = "auto"
    """Text encoder: auto (the local all-MiniLM-L6-v2, else tiny), tiny (small random BERT), or a local path or cached HF name."""
    max_tokens: int = 64
    """Utterance and context are tokenized, truncated (the context first) and padded to this many tokens."""
    context_turns: int = 0
    """Previous utterances of the dialogue, speaker-tagged, read before the utterance; 0: the utterance alone."""
    frozen_layers: int = 3
    """Transformer layers of the text encoder frozen from the bottom (with its embeddings when > 0)."""
    image_weights: str = "auto"
    """Video frame encoder: auto (ResNet18 from the torch hub cache, else EfficientNet-Lite0 from its package), resnet18, efficientnet_lite0, none (random ResNet18), or a .pth path."""
    audio_width: int = 64
    """Channels of the audio CNN's first block, doubling in each of its four (VGGish: 64)."""
    sample_rate: int = 16000
    """Audio is resampled to this rate (Hz) before the mel spectrogram."""
    n_mels: int = 64
    """Mel bands of the spectrogram (VGGish: 64)."""
    audio_seconds: float = 3.0
    """Seconds of audio from the clip's start (zero-padded): MELD's utterances average 3.6 s."""
    frames: int = 4
    """Video frames sampled evenly over the clip."""
    frame_size: int = 112
    """Frames are resized (shorter side) and centre-cropped to this many pixels square."""
    max_rows: int = 0
    """Rows read from each split's CSV, in file order; 0: all."""
    synthetic_clips: int = 600
    """Synthetic set (no data_dir): utterances over the three splits (70/15/15)."""

    # Most lowest values are the ones clip_shape, build_model and synthetic_dataset check again later.
    # frozen_layers has no highest: it depends on the text model (build_model checks it).
    LIMITS: ClassVar[dict] = {
        "sentiment_weight": (0, None),
        "fusion_dim": (4, None),
        "dropout": (0, 0.99),
        "modality_dropout": (0, 0.99),
        # [CLS], [SEP] and one word (at 1 the tokenizer returns ragged rows); the text encoders hold 512 positions.
        "max_tokens": (3, 512),
        "frozen_layers": (0, None),
        "audio_width": (1, None),
        "sample_rate": (4000, None),
        "n_mels": (8, None),
        "audio_seconds": (0.025, None),  # one 25 ms analysis window of the log-mel spectrogram
        "frames": (1, None),
        "frame_size": (16, None),
        "max_rows": (0, None),
        "synthetic_clips": (12, None),
        "context_turns": (0, None),
    }
