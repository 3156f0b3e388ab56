"""The run directory's pictures: training curves and the confusion matrix.

Written at the end of ``python -m platform.run asl`` into ``<storage>/asl/<name>/``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # runs have no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MAX_LABELED_CLASSES = 40


def training_curves(history: list[dict[str, float]], path: Path, title: str, baseline: dict | None = None) -> None:
    """One panel per metric name (loss, acc...), train and val together, plus the learning rate;
    ``baseline`` (``val/...`` scores of the trivial predictor) is a dashed line on its metrics' panels."""
    figure = curves_figure(history, title, baseline or {})
    figure.savefig(path, dpi=110)
    plt.close(figure)


def curves_figure(history: list[dict[str, float]], title: str, baseline: dict[str, float]) -> plt.Figure:
    """The figure :func:`training_curves` saves (its axes are what a test can read)."""
    epochs = [row["epoch"] for row in history]
    names = sorted({key.split("/", 1)[1] for row in history for key in row if key.startswith(("train/", "val/"))})
    panels = [*names, "lr"]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    for axis, name in zip(axes.flat, panels):
        keys = ["lr"] if name == "lr" else [f"train/{name}", f"val/{name}"]
        for key in keys:
            values = [row.get(key, np.nan) for row in history]
            if not np.all(np.isnan(values)):
                axis.plot(epochs, values, marker=".", label=key)
        trivial = baseline.get(f"val/{name}", np.nan)
        if np.isfinite(trivial):
            axis.axhline(trivial, color="grey", linestyle="--", linewidth=1, label="baseline (val)")
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def confusion_matrix(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    """Row-normalised, with counts written in the cells while the matrix is small enough to read."""
    counts = np.asarray(matrix, dtype=float)
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = len(counts)
    figure, axis = plt.subplots(figsize=(min(4 + 0.35 * size, 30), min(3.5 + 0.35 * size, 30)))
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, fraction=0.046)
    if size <= MAX_LABELED_CLASSES:
        labels = classes if len(classes) == size else [str(i) for i in range(size)]
        axis.set_xticks(range(size), labels, rotation=90, fontsize=7)
        axis.set_yticks(range(size), labels, fontsize=7)
        for (row, column), count in np.ndenumerate(counts):
            if count:
                colour = "white" if normalised[row, column] > 0.5 else "black"
                axis.text(column, row, int(count), ha="center", va="center", fontsize=6, color=colour)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def predicted_vs_true(pairs: list[list[float]], path: Path, title: str) -> None:
    """Regression targets: each validation sample as (true, predicted), with the identity line."""
    points = np.asarray(pairs, dtype=float).reshape(-1, 2)
    low, high = float(points.min()), float(points.max())
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.scatter(points[:, 0], points[:, 1], s=10, alpha=0.6)
    axis.plot([low, high], [low, high], color="grey", linewidth=1, linestyle="--")
    axis.set_xlabel("true")
    axis.set_ylabel("predicted")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
