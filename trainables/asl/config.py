"""The ASL sign classifier's config, read without torch or the model by
``python -m platform.run asl --help`` and ``--print-config`` (``platform/registry.py``)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from platform.config import TrainConfig, limited
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
    max_len: int = limited(384, low=1)
    """Most frames a sequence keeps; longer ones are resampled evenly down to it (none is padded)."""
    dim: int = limited(192, low=2)
    """Model width (even, divisible by heads)."""
    heads: int = limited(8, low=1)
    """Attention heads of the self-attention and Transformer blocks."""
    kernel_size: int = limited(17, low=1)
    """Kernel of the temporal convolutions."""
    tcn_dilations: tuple[int, ...] = limited((1, 2, 4), low=1)  # each block's (a dilation of 0 sees no frame)
    """Dilation of each TCN block (one block each)."""
    tcn_dropouts: tuple[float, ...] = limited((0.15, 0.2, 0.25), low=0, high=0.99)
    """Dropout of each TCN block, same length as tcn_dilations."""
    lstm_layers: int = limited(2, low=1)
    """Layers of the bidirectional LSTM (dim/2 hidden units per direction)."""
    conv_blocks: int = limited(2, low=0)
    """Conv1D blocks after the self-attention."""
    transformer_blocks: int = limited(1, low=0)
    """Transformer blocks after the Conv1D blocks."""
    conv_expand: int = limited(2, low=1)
    """Channel expansion inside each convolution block."""
    ffn_expand: int = limited(4, low=1)
    """Feed-forward expansion of the Transformer blocks."""
    block_dropout: float = limited(0.2, low=0, high=0.99)
    """Dropout inside the Conv1D, attention and Transformer blocks."""
    drop_path: float = limited(0.1, low=0, high=0.99)
    """Stochastic depth of the last residual block (rising linearly from 0 over the blocks)."""
    adaptive_dropout_start: float = limited(0.1, low=0, high=0.99)
    """Dropout between the stages at epoch 0."""
    adaptive_dropout_end: float = limited(0.6, low=0, high=0.99)
    """Dropout between the stages once adaptive_dropout_epochs have passed."""
    adaptive_dropout_epochs: int = limited(30, low=0)
    """Epochs over which the stage dropout rises linearly from start to end."""
    late_dropout: float = limited(0.8, low=0, high=0.99)
    """Dropout before the classifier, switched on at late_dropout_epoch."""
    late_dropout_epoch: int = limited(60, low=0)
    """First epoch (from 0) with late dropout."""
    label_smoothing: float = limited(0.05, low=0, high=0.99)
    """Label smoothing of the training cross-entropy."""
    val_fraction: float = limited(0.2, low=0.01, high=0.9)
    """Share of each sign's sequences held out for validation (seeded by seed)."""
    synthetic_signs: int = limited(20, low=2, synthetic=True)
    """Synthetic set (no data_dir): number of signs."""
    synthetic_sequences: int = limited(2000, low=4, synthetic=True)
    """Synthetic set: number of sequences over all signs."""
    synthetic_frames: int = limited(48, low=2, synthetic=True)
    """Synthetic set: mean frames a sequence (they vary from half to one and a half times it)."""
    synthetic_participants: int = limited(6, low=1, synthetic=True)
    """Synthetic set: number of signers (a quarter of them left-handed)."""

    def validate(self) -> None:
        if self.dim % 2 or self.dim % self.heads:
            raise UserError(f"config key 'dim' ({self.dim}) must be even and divisible by heads ({self.heads})")
        if len(self.tcn_dilations) != len(self.tcn_dropouts):
            raise UserError("config keys 'tcn_dilations' and 'tcn_dropouts' must have the same length")
