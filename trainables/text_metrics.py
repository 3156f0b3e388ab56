"""Scores of generated texts, the same for captions and reports: pycocoevalcap's BLEU-1..4, ROUGE-L
and CIDEr-D, and how varied the texts are (distinct share, vocabulary), with a collapse warning.

Used by ``python -m platform.run captioning`` and ``python -m platform.run xr2text`` (their
``evaluate``: ``val/...`` and, on the test split, ``test/...``; their ``run_warnings``, which the
platform prints as ``warning:`` lines when a run ends). Texts are scored as written (already
normalised to lower-case words separated by spaces), without the PTB tokenizer, which needs Java.

CIDEr-D (pycocoevalcap's ``Cider``) weighs n-grams by their document frequency among the
references of the texts being scored, so a score is a property of the split it was computed on:
comparable between models on the same split, not between splits. A caption that could describe any
image ("a man in the water") scores near 0 on it, which is why it is captioning's standard metric.
"""

from __future__ import annotations

import contextlib
import io

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

COLLAPSE_SHARE = 0.2
"""Below this share of distinct texts the generation has collapsed to a few texts for every input."""
COLLAPSE_MIN_TEXTS = 20
"""The collapse warning needs this many texts: on a handful, repeats say little."""


def text_metrics(references: list[list[str]], predictions: list[str], prefix: str = "val/") -> dict[str, float]:
    """``{prefix}bleu1..4``, ``rouge_l``, ``cider``, ``distinct`` (share of distinct predictions) and
    ``vocab`` (distinct words used) of each prediction against its references."""
    if len(references) != len(predictions) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists")
    gts = {k: list(refs) for k, refs in enumerate(references)}
    res = {k: [text] for k, text in enumerate(predictions)}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its length statistics
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {
        **{f"{prefix}bleu{n}": float(bleu[n - 1]) for n in range(1, 5)},
        f"{prefix}rouge_l": float(rouge),
        f"{prefix}cider": float(cider),
        **variety(predictions, prefix),
    }


def variety(predictions: list[str], prefix: str = "val/") -> dict[str, float]:
    """``distinct``: distinct texts / texts; ``vocab``: distinct words over all texts."""
    return {
        f"{prefix}distinct": len(set(predictions)) / len(predictions),
        f"{prefix}vocab": float(len({word for text in predictions for word in text.split()})),
    }


def collapse_warnings(metrics: dict, texts: dict[str, int], what: str = "captions") -> list[str]:
    """One line a split whose texts collapsed: ``metrics`` holds ``<split>/distinct`` and
    ``<split>/vocab``, ``texts`` the number of texts scored on each split."""
    lines = []
    for split, count in texts.items():
        share = metrics.get(f"{split}/distinct")
        if share is None or count < COLLAPSE_MIN_TEXTS or share >= COLLAPSE_SHARE:
            continue
        lines.append(
            f"generation collapsed on the {split} split: {round(share * count)} distinct {what} for "
            f"{count} inputs ({share:.0%}), {int(metrics.get(f'{split}/vocab', 0))} distinct words; "
            f"the {what} barely depend on the input (train longer, or check the encoder's weights)"
        )
    return lines
