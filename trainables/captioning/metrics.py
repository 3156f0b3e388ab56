"""Caption metrics: every image's caption against all its references (``trainables/text_metrics.py``).

Used by ``evaluate`` in ``python -m platform.run captioning`` (``val/...`` and ``test/...``) and by
its baseline; the same numbers come back from ``val_predictions.jsonl`` by scoring its
``prediction`` against its ``references`` with :func:`caption_metrics`.
"""

from __future__ import annotations

from trainables.text_metrics import text_metrics


def caption_metrics(predictions: list[dict], prefix: str = "val/") -> dict[str, float]:
    """``{prefix}bleu1..4``, ``rouge_l``, ``cider``, ``distinct`` and ``vocab`` of
    ``[{"references": [...], "prediction": ...}]``."""
    return text_metrics([list(p["references"]) for p in predictions], [p["prediction"] for p in predictions], prefix)
