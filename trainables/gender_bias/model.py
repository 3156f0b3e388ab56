"""The bias scorer: CNN image encoder + transformer text encoder -> fused MLP -> 0..10 score.

Built by ``python -m platform.run gender_bias`` through ``trainables.gender_bias.build_model``;
the encoders load offline (``trainables/image_encoders.py``: ResNet18 or EfficientNet-Lite0;
``trainables/pretrained.py``: the text model).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from platform.errors import UserError
from trainables.image_encoders import EncoderChoice, build_encoder
from trainables.pretrained import TINY_BERT, build_text_encoder, text_source, transformer_layers


def describe_sources(text_model: str, encoder: EncoderChoice) -> dict[str, str]:
    """What a run uses, in words, for meta.json and the run log."""
    text = text_source(text_model)
    return {
        "text_encoder": (f"pretrained from {text}" if text != "tiny" else f"tiny BERT {TINY_BERT}, random initialisation"),
        "image_encoder": encoder.description,
    }


# ---------------------------------------------------------------- the model


class BiasScorer(nn.Module):
    """Pooled image features (the encoder's dim) and mean-pooled text features, concatenated, through a dropout MLP."""

    def __init__(self, cfg: Any, text_model: str, encoder: EncoderChoice):
        super().__init__()
        self.sources = describe_sources(text_model, encoder)
        """Which weights were loaded, in words (also in the run's meta.json)."""
        self.image_encoder = build_encoder(encoder)
        self.text_encoder = build_text_encoder(text_model)
        layers = transformer_layers(self.text_encoder)
        if not 0 <= cfg.frozen_layers <= len(layers):
            raise UserError(f"config key 'frozen_layers' must be in 0..{len(layers)} for this text model")
        # The early layers hold general language; freezing them (and the embeddings they read)
        # keeps the pretraining and halves the text encoder's backward pass.
        frozen = [*layers[: cfg.frozen_layers]]
        if cfg.frozen_layers:
            embeddings = getattr(self.text_encoder, "embeddings", None)
            frozen.append(embeddings if embeddings is not None else self.text_encoder.get_input_embeddings())
        for module in frozen:
            module.requires_grad_(False)
        text_dim = self.text_encoder.config.hidden_size
        self.head = nn.Sequential(
            nn.Linear(self.image_encoder.dim + text_dim, cfg.fusion_dim),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.fusion_dim, cfg.fusion_dim // 2),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.fusion_dim // 2, 1),
        )

    def forward(self, image: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] images and [B, T] tokens -> [B] scores in 0..10."""
        if self.training and len(image) == 1 and image.shape[-1] < 64:
            # Below 64 px the encoders end at 1x1, and BatchNorm cannot train on a single value a
            # channel: a last batch of one post would crash the epoch. The post twice passes (its
            # layer4 BatchNorm then contributes nothing to this one step, which is harmless).
            return self.forward(image.expand(2, -1, -1, -1), input_ids.expand(2, -1), attention_mask.expand(2, -1))[:1]
        image_features = self.image_encoder(image)  # it normalises the 0-255 pixels as it was trained
        hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # Mean over real tokens: how all-MiniLM-L6-v2 was trained to pool.
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        text_features = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        logits = self.head(torch.cat([image_features, text_features], dim=1)).squeeze(1)
        return 10 * torch.sigmoid(logits)
