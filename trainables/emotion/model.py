"""The trimodal MELD classifier: text, audio and video encoders, a fusion, emotion and sentiment heads.

Built by ``python -m platform.run emotion`` through ``trainables.emotion.build_model``. The text
encoder is a BERT-like model (all-MiniLM-L6-v2 by default), the audio encoder a VGGish-like CNN over
log-mel spectrograms, the video encoder a CNN (ResNet18 or EfficientNet-Lite0,
``trainables/image_encoders.py``) over sampled frames (mean over frames); each is
projected to ``fusion_dim`` and fused by concatenation or by attention across the modalities. Only
the configured modalities are built, so ``modalities=text`` is the text-only baseline.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from platform.errors import UserError
from trainables.image_encoders import EncoderChoice, build_encoder
from trainables.pretrained import TINY_BERT, build_text_encoder, text_source, transformer_layers

MODALITIES = ("text", "audio", "video")
FUSIONS = ("concat", "attention")
ATTENTION_HEADS = 4


def parse_modalities(text: str) -> tuple[str, ...]:
    chosen = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in chosen if name not in MODALITIES]
    if unknown or "text" not in chosen:
        raise UserError(f"config key 'modalities' must list text and optionally audio, video (got {text!r})")
    return tuple(name for name in MODALITIES if name in chosen)


def describe_sources(text_model: str, encoder: EncoderChoice | None, modalities: tuple[str, ...]) -> dict[str, str]:
    """What a run uses, in words, for meta.json and the run log."""
    text = text_source(text_model)
    sources = {"text_encoder": (f"pretrained from {text}" if text != "tiny" else f"tiny BERT {TINY_BERT}, random initialisation")}
    if "audio" in modalities:
        sources["audio_encoder"] = "VGGish-like CNN, random initialisation"
    if "video" in modalities and encoder is not None:
        sources["video_encoder"] = encoder.description
    return sources


class TextEncoder(nn.Module):
    """BERT-like features mean-pooled over the target utterance's tokens (its dialogue context, before
    it, only informs them through attention); embeddings and the first frozen_layers layers frozen."""

    def __init__(self, text_model: str, frozen_layers: int, out_dim: int):
        super().__init__()
        self.encoder = build_text_encoder(text_model)
        layers = transformer_layers(self.encoder)
        if not 0 <= frozen_layers <= len(layers):
            raise UserError(f"config key 'frozen_layers' must be in 0..{len(layers)} for this text model")
        # Transfer learning: the lower layers keep general language, and skip their backward pass.
        if frozen_layers:
            self.encoder.get_input_embeddings().requires_grad_(False)
            getattr(self.encoder, "embeddings", nn.Identity()).requires_grad_(False)
            for layer in layers[:frozen_layers]:
                layer.requires_grad_(False)
        self.project = nn.Linear(self.encoder.config.hidden_size, out_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor | None = None) -> torch.Tensor:
        # Rows are padded to max_tokens; the batch's longest row is often far shorter (a CPU's time).
        longest = max(1, int(attention_mask.sum(dim=1).max()))
        input_ids, attention_mask = input_ids[:, :longest], attention_mask[:, :longest]
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = attention_mask if target_mask is None else target_mask[:, :longest]
        # A row without target tokens (an empty utterance) pools its whole input instead.
        pooled = torch.where(pooled.sum(dim=1, keepdim=True) > 0, pooled, attention_mask)
        weights = pooled.unsqueeze(-1).to(hidden.dtype)
        return self.project((hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1))


class AudioEncoder(nn.Module):
    """VGGish-like: blocks of 3x3 convolutions and 2x2 max-pooling over [n_mels, time], then a global mean."""

    def __init__(self, width: int, out_dim: int, blocks: int = 4):
        super().__init__()
        layers, channels = [], 1
        for block in range(blocks):
            widened = width * 2**block
            layers += [nn.Conv2d(channels, widened, 3, padding=1), nn.BatchNorm2d(widened), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            channels = widened
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.project = nn.Linear(channels, out_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        mel = mel.float().unsqueeze(1)
        # Per clip: loudness and recording level vary far more between clips than the cues do.
        mean = mel.mean(dim=(2, 3), keepdim=True)
        std = mel.std(dim=(2, 3), keepdim=True).clamp(min=1e-3)
        return self.project(self.features((mel - mean) / std))


class VideoEncoder(nn.Module):
    """The image encoder on every sampled frame (0-255 pixels; it normalises them), averaged over the frames."""

    def __init__(self, encoder: EncoderChoice, out_dim: int):
        super().__init__()
        self.cnn = build_encoder(encoder)
        self.project = nn.Linear(self.cnn.dim, out_dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        batch, count = frames.shape[:2]
        pixels = frames.flatten(0, 1)
        if self.training and len(pixels) == 1:
            # One frame of one clip (a last batch of one, frames=1): BatchNorm cannot train on a
            # single value a channel when the encoder ends at 1x1; the frame twice passes.
            return self.project(self.cnn(pixels.expand(2, -1, -1, -1))[:1])
        return self.project(self.cnn(pixels).view(batch, count, -1).mean(dim=1))


class AttentionFusion(nn.Module):
    """One self-attention layer over the modality vectors (missing ones masked), then their masked mean."""

    def __init__(self, dim: int, count: int, dropout: float):
        super().__init__()
        self.modality = nn.Parameter(torch.zeros(1, count, dim))
        self.attention = nn.MultiheadAttention(dim, ATTENTION_HEADS if dim % ATTENTION_HEADS == 0 else 1, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        tokens = features + self.modality
        attended, _ = self.attention(tokens, tokens, tokens, key_padding_mask=present == 0)
        tokens = self.norm(tokens + attended) * present.unsqueeze(-1)
        return tokens.sum(dim=1) / present.sum(dim=1, keepdim=True).clamp(min=1)


class EmotionClassifier(nn.Module):
    """Batch -> {"emotion": [B, 7] logits, "sentiment": [B, 3] logits}, for the heads configured."""

    def __init__(
        self, cfg: Any, text_model: str, encoder: EncoderChoice | None, heads: dict[str, int], class_weights: dict[str, list[float]]
    ):
        super().__init__()
        self.modalities = parse_modalities(cfg.modalities)
        if cfg.fusion not in FUSIONS:
            raise UserError(f"config key 'fusion' must be one of {', '.join(FUSIONS)} (got {cfg.fusion!r})")
        dim = cfg.fusion_dim
        self.sources = describe_sources(text_model, encoder, self.modalities)
        """Which weights were loaded, in words (also in the run's meta.json)."""
        self.encoders = nn.ModuleDict({"text": TextEncoder(text_model, cfg.frozen_layers, dim)})
        if "audio" in self.modalities:
            self.encoders["audio"] = AudioEncoder(cfg.audio_width, dim)
        if "video" in self.modalities:
            if encoder is None:
                raise UserError("modalities include video: build the model with an image encoder")
            self.encoders["video"] = VideoEncoder(encoder, dim)
        self.fusion = cfg.fusion
        self.modality_dropout = cfg.modality_dropout
        count = len(self.modalities)
        self.attention = AttentionFusion(dim, count, cfg.dropout) if cfg.fusion == "attention" else None
        # Concatenation also sees which modalities are present: a masked zero vector is not a cue.
        fused = dim if self.attention is not None else count * dim + count
        self.trunk = nn.Sequential(nn.LayerNorm(fused), nn.Dropout(cfg.dropout), nn.Linear(fused, dim), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.heads = nn.ModuleDict({task: nn.Linear(dim, classes) for task, classes in heads.items()})
        for task, classes in heads.items():
            weights = class_weights.get(task) or [1.0] * classes
            self.register_buffer(f"{task}_weights", torch.tensor(weights, dtype=torch.float32), persistent=False)

    def presence(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, modalities] 1 where a modality is there (and, in training, not dropped) else 0."""
        size = len(batch["input_ids"])
        device = batch["input_ids"].device
        columns = {"text": torch.ones(size, device=device)}
        columns["audio"] = batch["has_audio"].float() if "has_audio" in batch else torch.zeros(size, device=device)
        columns["video"] = batch["has_video"].float() if "has_video" in batch else torch.zeros(size, device=device)
        present = torch.stack([columns[name] for name in self.modalities], dim=1)
        if self.training and self.modality_dropout > 0:
            kept = present * (torch.rand_like(present) >= self.modality_dropout)
            # A row never loses every modality: it then keeps its text (first, and always there).
            kept[:, 0] = torch.where(kept.sum(dim=1) > 0, kept[:, 0], present[:, 0])
            present = kept
        return present

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        present = self.presence(batch)
        features = [self.encoders["text"](batch["input_ids"], batch["attention_mask"], batch.get("target_mask"))]
        if "audio" in self.modalities:
            features.append(self.encoders["audio"](batch["mel"]))
        if "video" in self.modalities:
            features.append(self.encoders["video"](batch["frames"]))
        stacked = torch.stack(features, dim=1).float() * present.unsqueeze(-1)
        if self.attention is not None:
            fused = self.attention(stacked, present)
        else:
            fused = torch.cat([stacked.flatten(1), present], dim=1)
        hidden = self.trunk(fused)
        return {task: head(hidden) for task, head in self.heads.items()}
