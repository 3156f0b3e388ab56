"""The caption decoder: image features -> LSTM state; teacher forcing, greedy and beam-search decoding.

Built by ``python -m platform.run captioning`` through ``trainables.captioning.build_model``, and
decoded by its ``evaluate`` and by ``python -m platform.predict RUN_DIR image.jpg --beam 3``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.captioning.vocab import END, PAD, START

State = tuple[torch.Tensor, torch.Tensor]


class Captioner(nn.Module):
    """Pooled image features, standardised, set the LSTM's first hidden and cell states ("show and
    tell" style); word embeddings are its inputs; a linear layer reads the next word off each hidden state."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, dropout: float, feature_dim: int):
        super().__init__()
        # Pooled CNN features differ between images by little next to their per-feature offsets
        # (a randomly initialised ResNet above all): standardising each feature lets the decoder
        # see the image; a per-image LayerNorm left every caption the same.
        self.feature_norm = nn.BatchNorm1d(feature_dim)
        self.initial_state = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, 2 * hidden_dim), nn.Tanh())
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, vocab_size)
        self.vocabulary: list[str] = []
        """Words by token id, for decoding (a plain attribute: it comes from meta, not the checkpoint)."""
        self.eval_images: list[dict] = []
        """Validation and test images ({"image", "references"}) by the rows' ``eval_index``."""

    def start_state(self, features: torch.Tensor) -> State:
        features, norm = features.float(), self.feature_norm
        if self.training and len(features) == 1:
            # BatchNorm cannot train on one value a channel (a last batch of one image with one
            # caption): that step normalises with the running statistics instead.
            features = F.batch_norm(features, norm.running_mean, norm.running_var, norm.weight, norm.bias, eps=norm.eps)
        else:
            features = norm(features)
        hidden, cell = self.initial_state(features).chunk(2, dim=-1)
        return hidden.unsqueeze(0).contiguous(), cell.unsqueeze(0).contiguous()

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: features [N, F] and input tokens [N, T] -> next-word logits [N, T, V]."""
        hidden, _ = self.lstm(self.dropout(self.embed(tokens)), self.start_state(features))
        return self.out(self.dropout(hidden))

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One decoding step: tokens [N] -> log-probabilities [N, V] of the next word (never <pad>
        or <start>), and the new state."""
        hidden, state = self.lstm(self.embed(tokens).unsqueeze(1), state)
        logits = self.out(hidden.squeeze(1)).float()
        logits[:, PAD] = float("-inf")
        logits[:, START] = float("-inf")
        return torch.log_softmax(logits, dim=-1), state

    def greedy(self, features: torch.Tensor, max_len: int) -> torch.Tensor:
        """[N, steps] token ids: the likeliest word at each step, <pad> after <end>."""
        state = self.start_state(features)
        tokens = torch.full((len(features),), START, dtype=torch.long, device=features.device)
        finished = torch.zeros(len(features), dtype=torch.bool, device=features.device)
        chosen = []
        for _ in range(max_len + 1):  # max_len words and <end>
            log_probs, state = self.step(tokens, state)
            tokens = log_probs.argmax(dim=-1).masked_fill(finished, PAD)
            chosen.append(tokens)
            finished |= tokens == END
            if finished.all():
                break
        return torch.stack(chosen, dim=1)

    def beam_search(self, features: torch.Tensor, width: int, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``width`` likeliest captions of each image by summed log-probability: token ids
        [N, width, steps] (best first, <pad> after <end>) and their scores [N, width]."""
        count, device = len(features), features.device
        hidden, cell = self.start_state(features)
        state = (hidden.repeat_interleave(width, dim=1), cell.repeat_interleave(width, dim=1))
        # Every beam starts as the same <start>: only the first may expand, or the first step
        # would fill the beam with copies of one word.
        scores = torch.full((count, width), float("-inf"), device=device)
        scores[:, 0] = 0.0
        tokens = torch.full((count * width,), START, dtype=torch.long, device=device)
        finished = torch.zeros(count, width, dtype=torch.bool, device=device)
        sequences = torch.zeros(count, width, 0, dtype=torch.long, device=device)
        for _ in range(max_len + 1):
            log_probs, state = self.step(tokens, state)
            log_probs = log_probs.view(count, width, -1)
            # A finished caption only continues with <pad>, at no cost, so it keeps its score.
            done = torch.full_like(log_probs[0, 0], float("-inf"))
            done[PAD] = 0.0
            log_probs = torch.where(finished.unsqueeze(-1), done, log_probs)
            vocab = log_probs.shape[-1]
            scores, flat = (scores.unsqueeze(-1) + log_probs).view(count, -1).topk(width, dim=-1)
            parent, tokens = flat // vocab, flat % vocab
            sequences = torch.cat([sequences.gather(1, parent.unsqueeze(-1).expand_as(sequences)),
                                   tokens.unsqueeze(-1)], dim=-1)
            finished = finished.gather(1, parent) | (tokens == END)
            rows = (parent + torch.arange(count, device=device).unsqueeze(1) * width).view(-1)
            state = (state[0][:, rows], state[1][:, rows])
            tokens = tokens.view(-1)
            if finished.all():
                break
        return sequences, scores

    def caption(self, features: torch.Tensor, width: int, max_len: int) -> torch.Tensor:
        """[N, steps] token ids of the best caption of each image: greedy for width 1, else beam search."""
        if width <= 1:
            return self.greedy(features, max_len)
        return self.beam_search(features, width, max_len)[0][:, 0]
