"""The report generator: CNN visual tokens -> Transformer decoder -> words, greedy or beam search.

Built by ``python -m platform.run xr2text`` through ``trainables.xr2text.build_model``; decoding
also serves ``python -m platform.predict RUN_DIR image.png --beam 3``. The CNN (ResNet18 or
EfficientNet-Lite0, cut after ``encoder_stages`` of its four stages) loads offline: see
``trainables/image_encoders.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainables.image_encoders import EncoderChoice, build_encoder, grid_side
from trainables.xr2text.reports import BOS_ID, EOS_ID, PAD_ID


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
        layer = nn.TransformerDecoderLayer(cfg.d_model, cfg.heads, 4 * cfg.d_model, cfg.dropout,
                                           batch_first=True, norm_first=True)
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
        hidden = self.decoder(self.embed(tokens) + self.positions(positions), memory, tgt_mask=causal,
                              tgt_is_causal=True, tgt_key_padding_mask=tokens == PAD_ID)
        return self.head(hidden)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits [B, T-1, V] predicting tokens[:, 1:] from tokens[:, :-1]."""
        return self.decode_logits(self.encode(image), tokens[:, :-1])

    @torch.no_grad()
    def generate(self, image: torch.Tensor, beam: int = 1) -> torch.Tensor:
        """Word ids [B, L] (after <bos>, ending with <eos> then <pad>); beam 1 is greedy decoding.

        Beams advance together ([B * beam] rows); a finished beam only extends with <pad> at no
        cost; the best beam is the highest mean log-probability a word (<eos> included), which
        keeps a short report from winning only because it is short.
        """
        memory = self.encode(image)
        batch = memory.shape[0]
        memory = memory.repeat_interleave(beam, dim=0)
        sequences = torch.full((batch * beam, 1), BOS_ID, dtype=torch.long, device=memory.device)
        scores = torch.full((batch, beam), float("-inf"), device=memory.device)
        scores[:, 0] = 0.0  # one live beam at the start, or the beams would be copies
        finished = torch.zeros(batch * beam, dtype=torch.bool, device=memory.device)
        for step in range(self.max_tokens + 1):
            log_probs = self.decode_logits(memory, sequences)[:, -1].float().log_softmax(dim=-1)
            log_probs[:, [PAD_ID, BOS_ID]] = float("-inf")
            if step == 0:
                log_probs[:, EOS_ID] = float("-inf")  # at least one word: an empty report cannot be scored
            if step == self.max_tokens:
                log_probs[~finished] = float("-inf")
                log_probs[~finished, EOS_ID] = 0.0  # the target was cut at max_tokens words too
            log_probs[finished] = float("-inf")
            log_probs[finished, PAD_ID] = 0.0
            vocab = log_probs.shape[1]
            candidates = (scores.view(-1, 1) + log_probs).view(batch, beam * vocab)
            scores, chosen = candidates.topk(beam, dim=1)
            rows = (torch.arange(batch, device=memory.device)[:, None] * beam + chosen // vocab).view(-1)
            words = (chosen % vocab).view(-1, 1)
            sequences = torch.cat([sequences[rows], words], dim=1)
            finished = finished[rows] | (words.view(-1) == EOS_ID)
            if finished.all():
                break
        lengths = (sequences[:, 1:] != PAD_ID).sum(dim=1).view(batch, beam).clamp(min=1)
        best = (scores / lengths).argmax(dim=1)
        return sequences.view(batch, beam, -1)[torch.arange(batch), best, 1:]
