"""The caption decoder: image features -> LSTM state; teacher forcing, and decoding through ``trainables/textgen.py``.

Built by ``python -m platform.run captioning`` through ``trainables.captioning.build_model``, and
decoded by its ``evaluate`` and by ``python -m platform.predict RUN_DIR image.jpg --beam 3``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables import textgen
from trainables.captioning.vocab import END, PAD, START, UNK

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
TOKENS = textgen.Tokens(pad=PAD, start=START, end=END, unknown=UNK)


class Captioner(nn.Module):
    """Pooled image features, standardised, set the LSTM's first hidden and cell states ("show and
    tell" style) and are fed again beside every word embedding, so the image still steers the tenth
    word as much as the first; a linear layer reads the next word off each hidden state."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, dropout: float, feature_dim: int):
        super().__init__()
        # Pooled CNN features differ between images by little next to their per-feature offsets
        # (a randomly initialised ResNet above all): standardising each feature lets the decoder
        # see the image; a per-image LayerNorm left every caption the same.
        self.feature_norm = nn.BatchNorm1d(feature_dim)
        self.initial_state = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, 2 * hidden_dim), nn.Tanh())
        # With the image in the first state only, a small decoder learns the commonest captions and
        # forgets the image after a few words; fed at every step it keeps them apart.
        self.image_input = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, embed_dim), nn.Tanh())
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.lstm = nn.LSTM(2 * embed_dim, hidden_dim, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, vocab_size)
        self.vocabulary: list[str] = []
        """Words by token id, for decoding (a plain attribute: it comes from meta, not the checkpoint)."""
        self.eval_images: list[dict] = []
        """Validation and test images ({"image", "references"}) by the rows' ``eval_index``."""

    def start_state(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The LSTM's first hidden and cell states [1, N, H] and the image's input [N, E] to every step."""
        features, norm = features.float(), self.feature_norm
        if self.training and len(features) == 1:
            # BatchNorm cannot train on one value a channel (a last batch of one image with one
            # caption): that step normalises with the running statistics instead.
            features = F.batch_norm(features, norm.running_mean, norm.running_var, norm.weight, norm.bias, eps=norm.eps)
        else:
            features = norm(features)
        hidden, cell = self.initial_state(features).chunk(2, dim=-1)
        return hidden.unsqueeze(0).contiguous(), cell.unsqueeze(0).contiguous(), self.image_input(features)

    def _inputs(self, tokens: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Word embeddings of tokens [N, T] beside the image's input [N, E]: [N, T, 2E]."""
        words = self.dropout(self.embed(tokens))
        return torch.cat([words, image.unsqueeze(1).expand(-1, tokens.shape[1], -1)], dim=-1)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: features [N, F] and input tokens [N, T] -> next-word logits [N, T, V]."""
        hidden, cell, image = self.start_state(features)
        output, _ = self.lstm(self._inputs(tokens, image), (hidden, cell))
        return self.out(self.dropout(output))

    def _step(self, prefixes: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One decoding step for ``trainables.textgen``: the last tokens of prefixes [R, t] and the
        state (batch first: hidden and cell [R, 1, H], image input [R, E]) -> next-word logits
        [R, V] and the new state."""
        hidden, cell, image = state
        output, (hidden, cell) = self.lstm(
            self._inputs(prefixes[:, -1:], image), (hidden.transpose(0, 1).contiguous(), cell.transpose(0, 1).contiguous())
        )
        return self.out(output.squeeze(1)), (hidden.transpose(0, 1), cell.transpose(0, 1), image)

    def caption(self, features: torch.Tensor, width: int, max_len: int, alpha: float = 0.0) -> torch.Tensor:
        """[N, steps] token ids of the best caption of each image: greedy for width 1, else beam
        search ranked with GNMT's length penalty ``alpha`` (``trainables/textgen.py``)."""
        hidden, cell, image = self.start_state(features)
        state = (hidden.transpose(0, 1), cell.transpose(0, 1), image)
        return textgen.generate(self._step, state, len(features), TOKENS, width, max_len, alpha, device=features.device)
