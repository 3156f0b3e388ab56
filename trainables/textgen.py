"""Text generation shared by the captioner and the report generator: greedy and beam search decoding.

Used by ``python -m platform.run captioning`` and ``python -m platform.run xr2text`` (their
``evaluate``) and by ``python -m platform.predict RUN_DIR image.jpg --beam 3``. The model supplies
a ``step`` function (prefixes so far -> next-token logits); this module owns the search: <pad> and
<start> are never generated, <end> not before ``min_len`` words and forced after ``max_len``, a
finished hypothesis only continues with <pad> at no cost, <unk> is never written, and hypotheses are ranked by GNMT's
length-normalised score (Wu et al. 2016): sum of log-probabilities / ((5 + length) / 6) ** alpha,
length counting the words and <end>. alpha 0 ranks by summed log-probability, which favours short
texts; alpha near 1 ranks about by the mean log-probability a word.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

# step(prefixes [R, t] with <start> first, state) -> (logits [R, V] of the next token, state)
Step = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]
# select(state, rows [R']) -> the state of those rows (a beam's parent, or each input repeated)
Select = Callable[[Any, torch.Tensor], Any]


@dataclasses.dataclass(frozen=True)
class Tokens:
    """The special token ids of a vocabulary."""

    pad: int
    start: int
    end: int
    unknown: int | None = None
    """Never generated either: a text saying "<unk>" is no text (the word it stands for was rare)."""


def length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT's ((5 + length) / 6) ** alpha: a score is divided by it."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


def rows_of(state: Any, rows: torch.Tensor) -> Any:
    """The default ``select``: a tensor, or a tuple of tensors, batch first."""
    if isinstance(state, tuple):
        return tuple(part[rows] for part in state)
    return state[rows]


def _next_log_probs(
    step: Step, prefixes: torch.Tensor, state: Any, finished: torch.Tensor, tokens: Tokens, min_len: int, max_len: int
) -> tuple[torch.Tensor, Any]:
    """Log-probabilities [R, V] of the next token under the search's rules, and the new state."""
    logits, state = step(prefixes, state)
    log_probs = logits.float().log_softmax(dim=-1)
    never = [tokens.pad, tokens.start] + ([] if tokens.unknown is None else [tokens.unknown])
    log_probs[:, never] = float("-inf")
    words = prefixes.shape[1] - 1
    if words < min_len:
        log_probs[:, tokens.end] = float("-inf")  # an empty caption cannot be scored
    if words >= max_len:  # the targets were cut at max_len words too
        end = log_probs[:, tokens.end].clone()
        log_probs.fill_(float("-inf"))
        log_probs[:, tokens.end] = end
    log_probs[finished] = float("-inf")
    log_probs[finished, tokens.pad] = 0.0
    return log_probs, state


def greedy(
    step: Step, state: Any, count: int, tokens: Tokens, max_len: int, min_len: int = 1, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """[count, steps] token ids: the likeliest token at each step, <pad> after <end>."""
    prefixes = torch.full((count, 1), tokens.start, dtype=torch.long, device=device)
    finished = torch.zeros(count, dtype=torch.bool, device=device)
    for _ in range(max_len + 1):
        log_probs, state = _next_log_probs(step, prefixes, state, finished, tokens, min_len, max_len)
        chosen = log_probs.argmax(dim=-1)
        prefixes = torch.cat([prefixes, chosen[:, None]], dim=1)
        finished |= chosen == tokens.end
        if finished.all():
            break
    return prefixes[:, 1:]


def beam_search(
    step: Step,
    state: Any,
    count: int,
    tokens: Tokens,
    width: int,
    max_len: int,
    alpha: float = 0.0,
    min_len: int = 1,
    select: Select = rows_of,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``width`` best texts of each of ``count`` inputs (``state`` holds one row an input):
    token ids [count, width, steps], best first, <pad> after <end>, and their length-normalised
    scores [count, width]. Beams of all inputs advance together ([count * width] rows)."""
    state = select(state, torch.arange(count, device=device).repeat_interleave(width))
    prefixes = torch.full((count * width, 1), tokens.start, dtype=torch.long, device=device)
    # Every beam starts as the same <start>: only the first may expand, or the beam would hold copies.
    scores = torch.full((count, width), float("-inf"), device=device)
    scores[:, 0] = 0.0
    lengths = torch.zeros(count, width, dtype=torch.long, device=device)
    finished = torch.zeros(count, width, dtype=torch.bool, device=device)
    for _ in range(max_len + 1):
        log_probs, state = _next_log_probs(step, prefixes, state, finished.view(-1), tokens, min_len, max_len)
        vocab = log_probs.shape[-1]
        candidates = scores.unsqueeze(-1) + log_probs.view(count, width, vocab)
        grown = (lengths + (~finished).long()).unsqueeze(-1)
        # Ranked by the normalised score, so a finished text and a longer live one compete fairly.
        ranked = (candidates / length_penalty(grown, alpha)).view(count, -1)
        chosen = ranked.topk(width, dim=-1).indices
        parent, token = chosen // vocab, chosen % vocab
        scores = candidates.view(count, -1).gather(1, chosen)
        lengths = grown.squeeze(-1).gather(1, parent)
        finished = finished.gather(1, parent) | (token == tokens.end)
        rows = (parent + torch.arange(count, device=device).unsqueeze(1) * width).view(-1)
        prefixes = torch.cat([prefixes[rows], token.view(-1, 1)], dim=1)
        state = select(state, rows)
        if finished.all():
            break
    normalised = scores / length_penalty(lengths, alpha)
    order = normalised.argsort(dim=1, descending=True)  # already best first but for ties; kept exact
    sequences = prefixes[:, 1:].view(count, width, -1)
    return sequences.gather(1, order.unsqueeze(-1).expand_as(sequences)), normalised.gather(1, order)


def generate(
    step: Step,
    state: Any,
    count: int,
    tokens: Tokens,
    width: int,
    max_len: int,
    alpha: float = 0.0,
    select: Select = rows_of,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """[count, steps] token ids of the best text of each input: greedy for width 1, else beam search."""
    if width <= 1:
        return greedy(step, state, count, tokens, max_len, device=device)
    return beam_search(step, state, count, tokens, width, max_len, alpha, select=select, device=device)[0][:, 0]
