"""Progress bars Ray draws in the driver's terminal, whichever worker or task advances them.

Used by ``python -m platform.run asl [--progress auto|on|off]``: the steps of each epoch (rank 0's
Train worker: steps, samples/s, running loss, ETA) and the shards of the preprocessing job (Ray
Data's own bars); and by ``python -m platform.label posts.csv`` for its image scan. ``auto``, the
default, draws them when the command's output is a terminal, so logs and CI keep one line an epoch.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

CHOICES = ("auto", "on", "off")


def wanted(choice: str) -> bool:
    return choice == "on" or (choice == "auto" and sys.stdout.isatty())


def epoch_steps(batches: Iterable[Any], *, total: int | None, title: str, samples_per_step: int, state: Any) -> Iterator[Any]:
    """``batches``, advancing a bar once each has been trained on; the loss shown is the running
    mean the loop keeps in ``state.partial`` (its metric sums and batches at the last step)."""
    from ray.experimental.tqdm_ray import tqdm

    bar = tqdm(desc=title, total=total, unit="step")
    started, done = time.perf_counter(), 0
    try:
        for item in batches:
            yield item
            done += 1
            seen = state.partial.get("batches") or 0
            loss = state.partial.get("totals", {}).get("loss")
            shown = [title, f"{done * samples_per_step / max(time.perf_counter() - started, 1e-9):.0f} samples/s"]
            if loss is not None and seen:
                shown.append(f"loss {loss / seen:.4f}")
            bar.set_description("  ".join(shown))
            bar.update(1)
    finally:
        bar.close()


def counted(items: Iterable[Any], total: int, title: str, shown: bool) -> Iterator[Any]:
    """``items`` with a bar of how many have gone by, when ``shown`` (in the driver or a worker)."""
    if not shown:
        yield from items
        return
    from ray.experimental.tqdm_ray import tqdm

    bar = tqdm(desc=title, total=total, unit="item")
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


def is_headline(key: str) -> bool:
    """``val/acc`` is shown in a progress line; ``val/recall/joy`` and its kind stay in the history."""
    return key.startswith(("train/", "val/", "test/")) and key.count("/") == 1


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def epoch_line(stem: str, metrics: dict, total_epochs: int, seconds_per_epoch: float, improved: bool) -> str:
    """Rank 0's line an epoch: its headline metrics, schedule values, learning rate, time and ETA."""
    shown = [f"{key} {value:.4f}" for key, value in metrics.items() if is_headline(key)]
    shown += [f"{key.split('/', 1)[1]} {value}" for key, value in metrics.items() if key.startswith("schedule/")]
    remaining = max(0, total_epochs - int(metrics["epoch"]))
    return (
        f"[{stem}] epoch {metrics['epoch']}/{total_epochs}  {'  '.join(shown)}  lr {metrics['lr']:.2e}  "
        f"{metrics['epoch_s']:.1f}s  ETA {format_seconds(remaining * seconds_per_epoch)}{'  *best' if improved else ''}"
    )
