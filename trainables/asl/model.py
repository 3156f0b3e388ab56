"""The ASL sign classifier: TCN -> BiLSTM -> self-attention -> Conv1D and Transformer blocks.

Built by ``python -m platform.run asl`` through ``trainables.asl.build_model``; sizes from its Config.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.asl.landmarks import NUM_FEATURES

# Batch x frames up to which inference computes the depthwise convolution as a windowed sum:
# oneDNN's kernel costs about 0.3 ms a call at any small size (a third of a prediction's time at
# 17 frames), the sum a tenth of that; its window copy grows with batch x frames x kernel.
WINDOWED_MAX = 64


def depthwise_windowed(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv(x)`` for a depthwise ``padding="same"`` convolution, as a sum over each frame's window."""
    (kernel,), (dilation,) = conv.kernel_size, conv.dilation
    span = (kernel - 1) * dilation + 1
    padded = F.pad(x, ((span - 1) // 2, span // 2))
    windows = padded.unfold(2, span, 1)[..., ::dilation]  # [batch, channels, frames, kernel]
    return (windows * conv.weight[:, 0, None, :]).sum(-1) + conv.bias[:, None]


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample while training."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        keep = x.new_empty(x.shape[0], *[1] * (x.dim() - 1)).bernoulli_(1 - self.rate)
        return x * keep / (1 - self.rate)


class ConvBlock(nn.Module):
    """Residual depthwise-separable temporal convolution; padded frames are zeroed so they never leak."""

    def __init__(self, dim: int, cfg: Any, dilation: int, dropout: float, drop_path: float):
        super().__init__()
        wide = dim * cfg.conv_expand
        self.norm, self.expand, self.project = nn.LayerNorm(dim), nn.Linear(dim, wide), nn.Linear(wide, dim)
        self.depthwise = nn.Conv1d(wide, wide, cfg.kernel_size, padding="same", dilation=dilation, groups=wide)
        self.dropout, self.drop_path = nn.Dropout(dropout), DropPath(drop_path)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = (F.silu(self.expand(self.norm(x))) * mask[..., None]).transpose(1, 2)
        short = not self.training and h.shape[0] * h.shape[2] <= WINDOWED_MAX
        h = F.silu((depthwise_windowed(h, self.depthwise) if short else self.depthwise(h)).transpose(1, 2))
        return x + self.drop_path(self.dropout(self.project(h)))


class AttentionBlock(nn.Module):
    """Pre-norm masked self-attention over time; with ffn_expand > 0 a Transformer block."""

    def __init__(self, dim: int, cfg: Any, drop_path: float, ffn_expand: int = 0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, cfg.heads, dropout=cfg.block_dropout, batch_first=True)
        self.dropout, self.drop_path = nn.Dropout(cfg.block_dropout), DropPath(drop_path)
        self.ffn = None
        if ffn_expand:
            self.ffn = nn.Sequential(
                nn.LayerNorm(dim),
                nn.Linear(dim, dim * ffn_expand),
                nn.GELU(),
                nn.Dropout(cfg.block_dropout),
                nn.Linear(dim * ffn_expand, dim),
            )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        h, _ = self.attention(h, h, h, key_padding_mask=~mask, need_weights=False)
        x = x + self.drop_path(self.dropout(h))
        return x if self.ffn is None else x + self.drop_path(self.dropout(self.ffn(x)))


class SignClassifier(nn.Module):
    """TCN -> BiLSTM -> self-attention -> Conv1D and Transformer blocks -> masked mean -> classes."""

    def __init__(self, cfg: Any, num_classes: int):
        super().__init__()
        dim = cfg.dim
        blocks = len(cfg.tcn_dilations) + 1 + cfg.conv_blocks + cfg.transformer_blocks
        rates = iter(np.linspace(0, cfg.drop_path, blocks).tolist())
        self.project = nn.Sequential(nn.Linear(NUM_FEATURES, dim), nn.LayerNorm(dim))
        self.tcn = nn.ModuleList(
            ConvBlock(dim, cfg, dilation, dropout, next(rates))
            for dilation, dropout in zip(cfg.tcn_dilations, cfg.tcn_dropouts, strict=True)
        )
        self.lstm_norm = nn.LayerNorm(dim)
        self.lstm = nn.LSTM(
            dim, dim // 2, cfg.lstm_layers, batch_first=True, bidirectional=True, dropout=cfg.block_dropout if cfg.lstm_layers > 1 else 0.0
        )
        self.attention = AttentionBlock(dim, cfg, next(rates))
        self.convs = nn.ModuleList(ConvBlock(dim, cfg, 1, cfg.block_dropout, next(rates)) for _ in range(cfg.conv_blocks))
        self.transformers = nn.ModuleList(AttentionBlock(dim, cfg, next(rates), cfg.ffn_expand) for _ in range(cfg.transformer_blocks))
        self.stage_dropout = nn.Dropout(cfg.adaptive_dropout_start)
        self.head_norm, self.late_dropout = nn.LayerNorm(dim), nn.Dropout(0.0)
        self.classifier = nn.Linear(dim, num_classes)

    def _lstm(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Packed so the backward direction starts at each sequence's last real frame, not the padding.
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.lstm_norm(x), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return x + out

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.bool()
        h = self.project(x)
        for block in self.tcn:
            h = block(h, mask)
        h = self.stage_dropout(self._lstm(self.stage_dropout(h), mask))
        h = self.stage_dropout(self.attention(h, mask))
        for block in [*self.convs, *self.transformers]:
            h = block(h, mask)
        weights = mask[..., None].to(h.dtype)
        pooled = (self.head_norm(h) * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        return self.classifier(self.late_dropout(pooled))
