"""Caption metrics with pycocoevalcap: corpus BLEU-1..4 and ROUGE-L against every reference.

Used by ``evaluate`` in ``python -m platform.run captioning`` (``val/...`` and ``test/...``); the
same numbers come back from ``val_predictions.jsonl`` by scoring its ``prediction`` against its
``references`` with :func:`caption_metrics`. Texts are scored as written (already normalised:
lower case words), without the PTB tokenizer, which needs Java.
"""

from __future__ import annotations

import contextlib
import io

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.rouge.rouge import Rouge


def caption_metrics(predictions: list[dict], prefix: str = "val/") -> dict[str, float]:
    """``{prefix}bleu1..4`` and ``{prefix}rougeL`` of ``[{"references": [...], "prediction": ...}]``."""
    references = {k: list(p["references"]) for k, p in enumerate(predictions)}
    hypotheses = {k: [p["prediction"]] for k, p in enumerate(predictions)}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its length statistics
        bleu, _ = Bleu(4).compute_score(references, hypotheses, verbose=0)
    rouge, _ = Rouge().compute_score(references, hypotheses)
    return {**{f"{prefix}bleu{n}": float(bleu[n - 1]) for n in range(1, 5)}, f"{prefix}rougeL": float(rouge)}
