"""A run's figures in Ray's metrics pipeline, beside Ray's own: Prometheus series a run, an epoch at a time.

    python -m platform.run asl        # then, on its node: curl http://<node>:<metrics_export_port>/metrics

Ray Train's controller runs :class:`MetricsCallback` after each epoch's report (as it runs
TensorBoard's); its gauges go through ``ray.util.metrics`` and are exported by the metrics agent of
its node exactly as Ray's are, named ``ray_rayplatform_*``. Each series is tagged with the run, its
trainable, tier and (in a sweep) trial, and a metric's series also with the metric's name: a run
has as many series as its trainable reports metrics, whatever its length. ``SERIES`` lists them; the
Grafana dashboard (``platform/tracking/grafana.json``) and its test read that list.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import ray.train

TAG_KEYS = ("run", "trainable", "tier", "trial")
PREFIX = "rayplatform_"
# Prometheus name (Ray adds "ray_") -> what it holds.
SERIES = {
    "epoch": "epochs trained",
    "step": "optimizer steps taken",
    "metric": "each reported train/ and val/ metric and the learning rate, by its name (tag metric)",
    "best": "the best value so far of the trainable's own metric (tag metric)",
    "samples_per_second": "training samples a second, over the last epoch",
    "epoch_seconds": "seconds of the last epoch",
    "restarts": "worker-group restarts so far",
    "eta_seconds": "seconds left, at the mean epoch time so far",
}


class MetricsCallback(ray.train.UserCallback):
    """The run's gauges, set from rank 0's report after each epoch (a partial checkpoint's report is
    not an epoch). ``tags``: run, trainable, tier, trial; ``metric``: the trainable's (name, mode)."""

    def __init__(self, tags: dict[str, str], *, epochs: int, train_rows: int, steps_per_epoch: int, metric: tuple[str, str]):
        self.tags = {key: str(tags.get(key, "")) for key in TAG_KEYS}
        self.epochs, self.train_rows, self.steps_per_epoch, self.metric = epochs, train_rows, steps_per_epoch, tuple(metric)
        self._seconds: dict[int, float] = {}
        self._best: float | None = None
        self._gauges: dict[str, Any] | None = None

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        first = metrics[0]
        if first.get("partial") or "epoch" not in first:
            return
        epoch = int(first["epoch"])
        seconds = float(first.get("epoch_s") or 0.0)
        self._seconds[epoch] = seconds  # a replayed epoch counts once, as its last attempt
        figures = {
            "epoch": epoch,
            "step": epoch * self.steps_per_epoch,
            "epoch_seconds": seconds,
            "samples_per_second": self.train_rows / seconds if seconds > 0 else 0.0,
            "restarts": float(first.get("restarts", 0)),
            "eta_seconds": max(0, self.epochs - epoch) * (sum(self._seconds.values()) / len(self._seconds)),
        }
        gauges = self._gauges or self._make_gauges()
        for name, value in figures.items():
            gauges[name].set(float(value), tags=self.tags)
        for key, value in first.items():
            if key.startswith(("train/", "val/")) or key == "lr":
                if isinstance(value, numbers.Real) and math.isfinite(value):
                    gauges["metric"].set(float(value), tags={**self.tags, "metric": key})
        self._set_best(gauges["best"], first.get(self.metric[0]))

    def _set_best(self, gauge: Any, value: Any) -> None:
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            return
        better = self._best is None or (value > self._best if self.metric[1] == "max" else value < self._best)
        if better:
            self._best = float(value)
        gauge.set(self._best, tags={**self.tags, "metric": self.metric[0]})

    def _make_gauges(self) -> dict[str, Any]:
        """Made where the callback runs (the controller), not where it was built: a gauge is not sent."""
        from ray.util.metrics import Gauge

        self._gauges = {
            name: Gauge(PREFIX + name, description=about, tag_keys=TAG_KEYS + (("metric",) if name in ("metric", "best") else ()))
            for name, about in SERIES.items()
        }
        return self._gauges

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_gauges": None}


def for_run(manifest: dict, tags: dict[str, str], metric: tuple[str, str]) -> MetricsCallback:
    """The callback of the run ``manifest`` describes (its config, data rows and launch)."""
    from platform.train import exact

    config, launch = manifest["config"], manifest.get("launch", {})
    rows = int(manifest.get("data", {}).get("rows", {}).get("train", 0))
    world = max(1, int(launch.get("workers") or 1))  # local mode (0 workers) trains as one
    steps = math.ceil(exact.step_count(rows, world, int(config["batch_size"])) / int(config.get("grad_accum_steps", 1) or 1))
    return MetricsCallback(tags, epochs=int(config["epochs"]), train_rows=rows, steps_per_epoch=steps, metric=metric)
