"""The emotion classifier's trivial baseline: each head's majority class in the training rows.

Used by ``python -m platform.run emotion`` through the ``baseline`` hook in
``trainables/emotion/__init__.py`` (the platform side is ``platform/runs/baseline.py``). The counts are
``meta["train_class_counts"]``, taken from the training rows before any oversampling, so nothing
is read again; the constant logits go through the trainable's own ``evaluate``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from platform.runs.baseline import Constant, Trivial, prior_logits


def majority(counts: dict[str, list[int]], classes: dict[str, tuple[str, ...]], tasks: tuple[str, ...], evaluate: Callable) -> Trivial:
    """Constant log class frequencies for each head in ``tasks``; ``evaluate(model, batches)`` scores them."""
    model = Constant({task: prior_logits(counts[task]) for task in tasks})
    named = ", ".join(f"{task} {classes[task][int(np.argmax(counts[task]))]!r}" for task in tasks)
    return Trivial(f"majority class {named}", lambda batches: evaluate(model, batches))
