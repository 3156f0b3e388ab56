"""Classification metrics of the emotion and sentiment heads (scikit-learn), keyed as the platform reports them.

Used by ``trainables.emotion.evaluate`` in every validation of ``python -m platform.run emotion``
and once on the test split after training (``test/...`` in the manifest).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def classification_metrics(
    true: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...], prefix: str, per_class: bool = True
) -> dict[str, float]:
    """Accuracy, weighted and macro F1 and (per_class) each class's precision and recall.

    Every class counts in the macro average, also one absent from the split (MELD's dev set has 22
    disgust rows, a small sample may have none): its F1 is then 0, so macro F1 stays comparable.
    """
    labels = list(range(len(classes)))
    metrics = {
        f"{prefix}acc": float(accuracy_score(true, predicted)),
        f"{prefix}weighted_f1": float(f1_score(true, predicted, labels=labels, average="weighted", zero_division=0)),
        f"{prefix}macro_f1": float(f1_score(true, predicted, labels=labels, average="macro", zero_division=0)),
    }
    if per_class:
        precision, recall, _, _ = precision_recall_fscore_support(true, predicted, labels=labels, zero_division=0)
        for name, p, r in zip(classes, precision, recall):
            metrics[f"{prefix}precision/{name}"] = float(p)
            metrics[f"{prefix}recall/{name}"] = float(r)
    return metrics


def confusion(true: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    """[classes, classes] counts, rows true and columns predicted, every class present."""
    return confusion_matrix(true, predicted, labels=list(range(len(classes))))
