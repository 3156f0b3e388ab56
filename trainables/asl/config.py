"""The ASL sign classifier's config, read without torch or the model by
``python -m platform.run asl --help`` and ``--print-config`` (``platform/registry.py``)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from platform.config import TrainConfig
from platform.errors import UserError

METRIC = ("val/acc", "max")
PREPROCESS_KEYS = ("max_len",)


@dataclasses.dataclass
class Config(TrainConfig):
    """The seed's full recipe; tiers in ``search_spaces/asl.py`` shrink it."""

    # The seed's training recipe, where it differs from the platform's defaults (documented there).
    epochs: int = 300
    lr: float = 4e-4
    weight_decay: float = 0.005
    scheduler: Literal["none", "cosine", "cosine_restarts"] = "cosine_restarts"
    patience: int = 20
    max_len: int = 384
    """Most frames a sequence keeps; longer ones are resampled evenly down to it (none is padded)."""
    dim: int = 192
    """Model width (even, divisible by heads)."""
    heads: int = 8
    """Attention heads of the self-attention and Transformer blocks."""
    kernel_size: int = 17
    """Kernel of the temporal convolutions."""
    tcn_dilations: tuple[int, ...] = (1, 2, 4)
    """Dilation of each TCN block (one block each)."""
    tcn_dropouts: tuple[float, ...] = (0.15, 0.2, 0.25)
    """Dropout of each TCN block, same length as tcn_dilations."""
    lstm_layers: int = 2
    """Layers of the bidirectional LSTM (dim/2 hidden units per direction)."""
    conv_blocks: int = 2
    """Conv1D blocks after the self-attention."""
    transformer_blocks: int = 1
    """Transformer blocks after the Conv1D blocks."""
    conv_expand: int = 2
    """Channel expansion inside each convolution block."""
    ffn_expand: int = 4
    """Feed-forward expansion of the Transformer blocks."""
    block_dropout: float = 0.2
    """Dropout inside the Conv1D, attention and Transformer blocks."""
    drop_path: float = 0.1
    """Stochastic depth of the last residual block (rising linearly from 0 over the blocks)."""
    adaptive_dropout_start: float = 0.1
    """Dropout between the stages at epoch 0."""
    adaptive_dropout_end: float = 0.6
    """Dropout between the stages once adaptive_dropout_epochs have passed."""
    adaptive_dropout_epochs: int = 30
    """Epochs over which the stage dropout rises linearly from start to end."""
    late_dropout: float = 0.8
    """Dropout before the classifier, switched on at late_dropout_epoch."""
    late_dropout_epoch: int = 60
    """First epoch (from 0) with late dropout."""
    label_smoothing: float = 0.05
    """Label smoothing of the training cross-entropy."""
    val_fraction: float = 0.2
    """Share of each sign's sequences held out for validation (seeded by seed)."""
    synthetic_signs: int = 20
    """Synthetic set (no data_dir): number of signs."""
    synthetic_sequences: int = 2000
    """Synthetic set: number of sequences over all signs."""
    synthetic_frames: int = 48
    """Synthetic set: mean frames a sequence (they vary from half to one and a half times it)."""
    synthetic_participants: int = 6
    """Synthetic set: number of signers (a quarter of them left-handed)."""

    LIMITS: ClassVar[dict] = {
        "max_len": (1, None),
        "dim": (2, None),
        "heads": (1, None),
        "kernel_size": (1, None),
        "tcn_dilations": (1, None),  # each block's (a dilation of 0 sees no frame)
        "tcn_dropouts": (0, 0.99),
        "lstm_layers": (1, None),
        "conv_blocks": (0, None),
        "transformer_blocks": (0, None),
        "conv_expand": (1, None),
        "ffn_expand": (1, None),
        "block_dropout": (0, 0.99),
        "drop_path": (0, 0.99),
        "adaptive_dropout_start": (0, 0.99),
        "adaptive_dropout_end": (0, 0.99),
        "adaptive_dropout_epochs": (0, None),
        "late_dropout": (0, 0.99),
        "late_dropout_epoch": (0, None),
        "label_smoothing": (0, 0.99),
        "val_fraction": (0.01, 0.9),
        "synthetic_signs": (2, None),
        "synthetic_sequences": (4, None),
        "synthetic_frames": (2, None),
        "synthetic_participants": (1, None),
    }

    def validate(self) -> None:
        if self.dim % 2 or self.dim % self.heads:
            raise UserError(f"config key 'dim' ({self.dim}) must be even and divisible by heads ({self.heads})")
        if len(self.tcn_dilations) != len(self.tcn_dropouts):
            raise UserError("config keys 'tcn_dilations' and 'tcn_dropouts' must have the same length")
