"""The report generator: CNN visual tokens -> Transformer decoder -> words (decoding: ``trainables/textgen.py``).

Built by ``python -m platform.run xr2text`` through ``trainables.xr2text.build_model``; decoding
also serves ``python -m platform.predict RUN_DIR image.png --beam 3``. The CNN (ResNet18 or
EfficientNet-Lite0, cut after ``encoder_stages`` of its four stages) loads offline: see
``trainables/image_encoders.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainables import textgen
from trainables.image_encoders import EncoderChoice, build_encoder, grid_side
from trainables.xr2text.reports import BOS_ID, EOS_ID, PAD_ID, UNK_ID

TOKENS = textgen.Tokens(pad=PAD_ID, start=BOS_ID, end=EOS_ID, unknown=UNK_ID)


def describe_encoder(choice: EncoderChoice, stages: int) -> str:
    return f"{choice.description}; {stages} of its 4 stages"


class ReportGenerator(nn.Module):
    """Image -> grid of visual tokens (memory) -> causal Transformer decoder over report words."""

    def __init__(self, cfg: Any, vocab: list[str], encoder: EncoderChoice):
        super().__init__()
        self.vocab = vocab
        """Word of each id, for decoding in evaluate and predict (a plain attribute, not weights)."""
        self.encoder = build_encoder(encoder, cfg.encoder_stages)
        side = grid_side(cfg.image_size, cfg.encoder_stages)
        self.project = nn.Linear(self.encoder.dim, cfg.d_model)
        self.visual_positions = nn.Parameter(torch.zeros(1, side * side, cfg.d_model))
        self.memory_norm = nn.LayerNorm(cfg.d_model)
        self.embed = nn.Embedding(len(vocab), cfg.d_model, padding_idx=PAD_ID)
        self.positions = nn.Embedding(cfg.max_tokens + 2, cfg.d_model)
        layer = nn.TransformerDecoderLayer(cfg.d_model, cfg.heads, 4 * cfg.d_model, cfg.dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.decoder_layers, norm=nn.LayerNorm(cfg.d_model))
        self.head = nn.Linear(cfg.d_model, len(vocab))
        self.max_tokens = cfg.max_tokens
        nn.init.normal_(self.visual_positions, std=0.02)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 1, S, S] -> memory [B, side*side, d_model]."""
        # X-rays are grey: one channel repeated as RGB for the pretrained stem (which normalises).
        grid = self.encoder.grid(image.expand(-1, 3, -1, -1)).flatten(2).transpose(1, 2)
        return self.memory_norm(self.project(grid) + self.visual_positions[:, : grid.shape[1]])

    def decode_logits(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Next-word logits [B, T, V] at every position of tokens [B, T] (causal)."""
        length = tokens.shape[1]
        positions = torch.arange(length, device=tokens.device)
        # Boolean like the padding mask (mixing a float and a bool mask is deprecated).
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(diagonal=1)
        hidden = self.decoder(
            self.embed(tokens) + self.positions(positions),
            memory,
            tgt_mask=causal,
            tgt_is_causal=True,
            tgt_key_padding_mask=tokens == PAD_ID,
        )
        return self.head(hidden)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits [B, T-1, V] predicting tokens[:, 1:] from tokens[:, :-1]."""
        return self.decode_logits(self.encode(image), tokens[:, :-1])

    @torch.no_grad()
    def generate(self, image: torch.Tensor, beam: int = 1, alpha: float = 0.0) -> torch.Tensor:
        """Word ids [B, L] (after <bos>, ending with <eos> then <pad>); beam 1 is greedy decoding,
        a wider beam is ranked with GNMT's length penalty ``alpha`` (``trainables/textgen.py``)."""
        memory = self.encode(image)

        def step(prefixes: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.decode_logits(memory, prefixes)[:, -1], memory

        return textgen.generate(step, memory, memory.shape[0], TOKENS, beam, self.max_tokens, alpha, device=memory.device)
