"""The report generator's trivial baseline: one training report written for every study.

Used by ``python -m platform.run xr2text`` through the ``baseline`` hook in
``trainables/xr2text/__init__.py`` (the platform side is ``platform/runs/baseline.py``): the training
report that scores best against the other training reports is fitted once a run and scored on val
and test with the trainable's own BLEU-4 + ROUGE-L, so ``val/bleu4_rouge_l`` means the same thing.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.rouge.rouge import Rouge

from platform.runs.baseline import Trivial
from trainables.xr2text import reports

# Candidates are CANDIDATES random training reports, scored against REFERENCES other ones (disjoint,
# so no candidate meets itself). Every report against every report is quadratic in the split, and
# ROUGE-L's longest common subsequence is pure Python; normal reports share most of their wording
# ("the heart is normal in size ..."), which a sample of this size already ranks alike, and the
# cost stays CANDIDATES x REFERENCES scorings (about 3 s here) whatever the split's size.
CANDIDATES = 32
REFERENCES = 128


def texts(batches: Iterable[dict]) -> list[str]:
    """The ``reference`` column's reports (normalised text, as ``evaluate`` scores against)."""
    return [reports.from_bytes(row) for batch in batches for row in batch["reference"]]


def candidates_and_references(train: list[str], seed: int) -> tuple[list[str], list[str]]:
    order = np.random.default_rng(seed).permutation(len(train))
    chosen = order[: max(1, min(CANDIDATES, len(train) // 2))]
    others = order[len(chosen) :][:REFERENCES]
    return [train[i] for i in chosen], [train[i] for i in (others if len(others) else chosen)]


def ranking(report: str, references: list[str]) -> float:
    """BLEU-4 + ROUGE-L (the METRIC, pycocoevalcap's scorers as the trainable's metrics use them) of
    ``report`` for every study, without the CIDEr that scoring a split also computes."""
    gts = {k: [reference] for k, reference in enumerate(references)}
    res = {k: [report] for k in gts}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its length statistics
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    return float(bleu[3]) + float(rouge)


def best_report(read: Callable, seed: int, metrics_of: Callable[[list[str], list[str]], dict]) -> Trivial:
    """The training report with the best BLEU-4 + ROUGE-L against other training reports, for every
    study; ``metrics_of(references, predictions)`` is the trainable's own scoring of a split."""
    train = [text for text in texts(read("reference")) if text]
    if not train:
        raise ValueError("the training split has no reports to choose a baseline report from")
    candidates, references = candidates_and_references(train, seed)
    distinct = list(dict.fromkeys(candidates))  # in sample order, so a tie goes to the first drawn
    report = max(distinct, key=lambda candidate: ranking(candidate, references))

    def score(batches: Iterable[dict]) -> dict:
        truth = texts(batches)
        return metrics_of(truth, [report] * len(truth))

    return Trivial(f"report {report!r} for every study (the best of {len(distinct)} training reports)", score)
