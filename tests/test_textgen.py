"""The shared decoding and text metrics of captioning and xr2text: beam search against exhaustive
search on hand-built models whose probabilities the tests set, the length penalty, and the metrics.

Run with ``cd <repo> && .venv/bin/python -m pytest tests/test_textgen.py`` (no Ray, no model training).
"""

from __future__ import annotations

import itertools
import math
import zlib

import pytest
import torch
from pycocoevalcap.cider.cider import Cider

from trainables import textgen
from trainables.text_metrics import collapse_warnings, text_metrics

TOKENS = textgen.Tokens(pad=0, start=1, end=2)
WORDS = (3, 4, 5)
VOCAB = 6


def table_logits(source: int, prefix: tuple[int, ...]) -> torch.Tensor:
    """Next-token logits of input ``source`` after ``prefix``: a fixed function of both, so the
    search and the exhaustive enumeration see the same model whatever order they ask in."""
    generator = torch.Generator().manual_seed(zlib.crc32(repr((source, prefix)).encode()))
    return torch.randn(VOCAB, generator=generator) * 2


def table_step(prefixes: torch.Tensor, sources: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [table_logits(int(s), tuple(p[1:].tolist())) for p, s in zip(prefixes, sources)]
    return torch.stack(rows), sources


def dict_step(probabilities: dict[tuple[int, ...], dict[int, float]]):
    """A model that writes what ``probabilities`` says: {prefix: {token: probability}}, the rest ~0."""

    def step(prefixes: torch.Tensor, state):
        rows = []
        for prefix in prefixes[:, 1:].tolist():
            logits = torch.full((VOCAB,), -30.0)
            for token, p in probabilities.get(tuple(prefix), {TOKENS.end: 1.0}).items():
                logits[token] = math.log(p)
            rows.append(logits)
        return torch.stack(rows), state

    return step


def exhaustive(source: int, max_len: int, alpha: float) -> tuple[tuple[int, ...], float]:
    """The best text of ``source`` by enumerating every one: words then <end> (forced after max_len)."""
    best = ((), float("-inf"))
    for length in range(1, max_len + 1):
        for words in itertools.product(WORDS, repeat=length):
            total, prefix = 0.0, ()
            for token in (*words, TOKENS.end):
                total += table_logits(source, prefix).log_softmax(dim=-1)[token].item()
                prefix = (*prefix, token)
            score = total / ((5 + length + 1) / 6) ** alpha
            if score > best[1]:
                best = (words, score)
    return best


def text(ids: torch.Tensor) -> tuple[int, ...]:
    """The words of a generated row, up to <end>."""
    ids = ids.tolist()
    return tuple(ids[: ids.index(TOKENS.end)] if TOKENS.end in ids else ids)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_wide_beam_returns_the_exact_argmax_of_every_input(alpha):
    # 3 words, at most 3 of them: 39 texts, fewer live prefixes at any step than a beam of 30.
    sources = torch.arange(4)
    sequences, scores = textgen.beam_search(table_step, sources, 4, TOKENS, width=30, max_len=3, alpha=alpha)
    for source in range(4):
        words, score = exhaustive(source, 3, alpha)
        assert text(sequences[source, 0]) == words
        assert scores[source, 0].item() == pytest.approx(score, abs=1e-5)
    assert (scores[:, :-1] >= scores[:, 1:]).all(), "best first"


def test_beam_one_is_greedy_and_a_wider_beam_never_scores_worse():
    sources = torch.arange(8)
    greedy = textgen.greedy(table_step, sources, 8, TOKENS, max_len=6)
    beam, beam_scores = textgen.beam_search(table_step, sources, 8, TOKENS, width=1, max_len=6)
    assert torch.equal(beam[:, 0], greedy)
    wide_scores = textgen.beam_search(table_step, sources, 8, TOKENS, width=4, max_len=6)[1]
    assert (wide_scores[:, 0] >= beam_scores[:, 0] - 1e-6).all() and (wide_scores[:, 0] > beam_scores[:, 0]).any()


def test_beam_search_finds_what_greedy_misses():
    # Greedy takes "3" (0.6) but every continuation of it is unlikely; "4" (0.4) then <end> is sure.
    step = dict_step({(): {3: 0.6, 4: 0.4}, (3,): {3: 0.3, 4: 0.3, 5: 0.2, TOKENS.end: 0.2}, (4,): {TOKENS.end: 1.0}})
    state = torch.zeros(1)
    assert text(textgen.greedy(step, state, 1, TOKENS, max_len=4)[0]) == (3, 3)
    assert text(textgen.generate(step, state, 1, TOKENS, width=2, max_len=4)[0]) == (4,)


def test_the_length_penalty_chooses_the_longer_text_only_when_asked():
    # "3 <end>" is a little likelier than "3 4 <end>"; normalising by length turns the order round.
    step = dict_step({(): {3: 0.9, 4: 0.1}, (3,): {TOKENS.end: 0.52, 4: 0.48}, (3, 4): {TOKENS.end: 0.99, 5: 0.01}})
    state = torch.zeros(1)
    assert text(textgen.generate(step, state, 1, TOKENS, width=3, max_len=5, alpha=0.0)[0]) == (3,)
    assert text(textgen.generate(step, state, 1, TOKENS, width=3, max_len=5, alpha=1.0)[0]) == (3, 4)
    assert textgen.length_penalty(torch.tensor([1, 7]), 0.0).tolist() == [1.0, 1.0]
    assert textgen.length_penalty(torch.tensor([1]), 1.0).item() == pytest.approx(1.0)


def test_end_rules_padding_and_max_length():
    # A model that would stop at once and never again: min_len forbids the empty text, max_len cuts it.
    step = dict_step({(): {TOKENS.end: 0.9, 3: 0.1}})
    never_ends = lambda prefixes, state: (torch.tensor([[0.0, 5.0, -9.0, 1.0, 0.0, 0.0]]).expand(len(prefixes), -1), state)  # noqa: E731
    for width in (1, 3):
        first = textgen.generate(step, torch.zeros(2), 2, TOKENS, width=width, max_len=4)
        assert [text(row) for row in first] == [(3,), (3,)]
        long = textgen.generate(never_ends, torch.zeros(2), 2, TOKENS, width=width, max_len=4)
        assert long.shape == (2, 5) and long[:, -1].tolist() == [TOKENS.end] * 2
        assert TOKENS.start not in long.tolist()[0] and TOKENS.pad not in long.tolist()[0]
    # A vocabulary's <unk> (here 5) is never written, however likely.
    unknown = textgen.Tokens(pad=0, start=1, end=2, unknown=5)
    likes_unknown = dict_step({(): {5: 0.9, 3: 0.1}, (3,): {5: 0.9, TOKENS.end: 0.1}})
    for width in (1, 3):
        assert text(textgen.generate(likes_unknown, torch.zeros(1), 1, unknown, width=width, max_len=4)[0]) == (3,)
    ragged = textgen.beam_search(table_step, torch.arange(3), 3, TOKENS, width=3, max_len=6)[0]
    for row in ragged.reshape(-1, ragged.shape[-1]).tolist():
        assert TOKENS.start not in row
        if TOKENS.end in row:  # nothing but <pad> after <end>
            assert set(row[row.index(TOKENS.end) + 1 :]) <= {TOKENS.pad}


def test_text_metrics_are_pycocoevalcap_and_count_distinct_texts_and_words():
    references = [
        ["a dog runs on the grass", "a brown dog runs"],
        ["two children play in a park", "kids play"],
        ["a man rides a bike", "a cyclist on a road"],
    ]
    predictions = ["a dog runs", "a dog runs", "a man rides a bike"]
    metrics = text_metrics(references, predictions, prefix="test/")
    cider, _ = Cider().compute_score(dict(enumerate(references)), {k: [p] for k, p in enumerate(predictions)})
    assert metrics["test/cider"] == pytest.approx(cider) and metrics["test/cider"] > 0
    assert metrics["test/distinct"] == pytest.approx(2 / 3) and metrics["test/vocab"] == 6
    assert {"test/bleu1", "test/bleu4", "test/rouge_l"} <= set(metrics)
    constant = text_metrics(references, ["a dog runs"] * 3)
    assert constant["val/distinct"] == pytest.approx(1 / 3) and constant["val/cider"] < metrics["test/cider"]


def test_collapse_warning_only_for_enough_repeated_texts():
    collapsed = {"val/distinct": 3 / 40, "val/vocab": 6.0, "test/distinct": 0.9}
    lines = collapse_warnings(collapsed, {"val": 40, "test": 40}, "captions")
    assert len(lines) == 1 and "val split: 3 distinct captions for 40 inputs" in lines[0]
    assert collapse_warnings(collapsed, {"val": 10, "test": 40}) == [], "too few texts to tell"
    assert collapse_warnings({"val/distinct": 0.5}, {"val": 40}) == []
