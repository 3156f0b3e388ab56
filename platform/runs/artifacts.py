"""The run directory ``<storage>/<stem>/<name>/``: config, manifest, history, plots, best model.

Written by ``python -m platform.run asl``; read by ``python -m platform.predict <run dir>`` and
``python -m platform.monitor``. Ray Train's checkpoints (``epoch_*``) live in the same directory.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import torch

from platform import config as config_lib
from platform.contract import Trainable
from platform.data import stream
from platform.errors import UserError, redacted
from platform.runs import durable, plots

# The file names and JSON helpers live where the read-only tools can import them without torch.
from platform.runs.run_files import (  # noqa: F401 - re-exported: artifacts.MANIFEST_FILE etc.
    BEST_MODEL_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    MANIFEST_FILE,
    META_FILE,
    TENSORBOARD_DIR,
    now,
    read_json,
    write_json,
)
from platform.tracking import tensorboard
from platform.train import checkpoints
from platform.train.averaging import evaluated_weights
from platform.train.loop import validate

TIMED_PREDICTIONS = 20


def start(
    run_dir: Path,
    trainable: Trainable,
    *,
    tier: str,
    cfg: Any,
    meta: dict,
    hardware: dict,
    resumed: bool,
    dashboard: str | None,
    launch: dict | None = None,
) -> dict:
    """Config, meta and a ``running`` manifest, before any worker starts. ``launch`` (workers,
    CPUs a worker, GPU) is what ``--resume`` holds the run to."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_lib.save(cfg, run_dir / CONFIG_FILE)
    write_json(run_dir / META_FILE, meta)
    manifest = read_json(run_dir / MANIFEST_FILE) if resumed else {"started": now(), "resumes": 0}
    metric, mode = trainable.METRIC
    manifest.update(
        stem=trainable.stem,
        trainable=trainable.reference,  # what predict finds it again by (platform/registry.py, recorded)
        tier=tier,
        # Its name and mode now (finish adds the best value), so the monitor need not import the trainable.
        metric={**manifest.get("metric", {}), "name": metric, "mode": mode},
        name=run_dir.name,
        status="running",
        command=" ".join(["python -m platform.run", *sys.argv[1:]]),
        config=config_lib.to_dict(cfg),
        data=meta,
        hardware=hardware,
        dashboard=dashboard,
        launch=launch,
        pid=os.getpid(),
        # With the pid, it tells the driver from a later process given the same pid (platform/monitor.py).
        pid_started=psutil.Process().create_time(),
        updated=now(),
    )
    manifest["resumes"] += int(resumed)
    write_json(run_dir / MANIFEST_FILE, manifest)
    return manifest


def fail(run_dir: Path, manifest: dict, reason: str) -> None:
    if (run_dir / MANIFEST_FILE).exists():
        write_json(run_dir / MANIFEST_FILE, {**manifest, "status": "failed", "error": redacted(reason), "updated": now()})


def finish(
    run_dir: Path,
    trainable: Trainable,
    *,
    cfg: Any,
    meta: dict,
    result: Any,
    val_split: Any,
    manifest: dict,
    test_split: Any = None,
) -> dict:
    """Export the best model, write history, plots and the finished manifest; returns it. A test
    split is scored once, here, by the best model."""
    metric, mode = trainable.METRIC
    latest = checkpoints.state_of_result(result.checkpoint)
    best_checkpoint = checkpoints.best_of_result(result, metric, mode)
    best = checkpoints.state_of_result(best_checkpoint)
    saved = io.BytesIO()
    weights = evaluated_weights(best)
    torch.save({"model": weights, "epoch": best["epoch"]}, saved)
    durable.write_bytes(run_dir / BEST_MODEL_FILE, saved.getvalue())

    history = latest["history"]
    durable.write_text(run_dir / HISTORY_FILE, pd.DataFrame(history).to_csv(index=False))
    if (run_dir / TENSORBOARD_DIR).is_dir():  # absent when TensorBoard is not a tracker (--tracker mlflow)
        tensorboard.write_history(run_dir / TENSORBOARD_DIR, history)
    title = f"{manifest['stem']} / {manifest['tier']} / {run_dir.name}"
    plots.training_curves(history, run_dir / "training_curves.png", title, (manifest.get("baseline") or {}).get("val"))
    write_extras(best.get("extras", {}), run_dir, "", meta, f"{title} (best epoch {best['epoch']})")

    model = load_model(trainable, cfg, meta, weights)
    if test_split is not None:
        test_metrics, test_extras = score_split(trainable, model, cfg, test_split)
        write_extras(test_extras, run_dir, "test_", meta, f"{title} (test split, best epoch {best['epoch']})")
        manifest["test_metrics"] = test_metrics
    best_row = history[best["epoch"] - 1]
    manifest.update(
        status="finished",
        updated=now(),
        finished=now(),
        model=describe_model(model),
        training={
            "epochs_completed": latest["epoch"],
            "epochs_max": cfg.epochs,
            "optimizer_steps": latest["step"],
            "stopped_early": latest["epoch"] < cfg.epochs,
            "best_epoch": best["epoch"],
            "restarts": latest["restarts"],
        },
        metric={"name": metric, "mode": mode, "best": best_row[metric]},
        best_metrics=best_row,
        final_metrics=history[-1],
        history=history,
        inference=time_predictions(trainable, model, cfg, val_split),
        checkpoints={"best": best_checkpoint.path, "latest": result.checkpoint.path},
    )
    write_json(run_dir / MANIFEST_FILE, manifest)
    return manifest


def write_extras(extras: dict, run_dir: Path, prefix: str, meta: dict, title: str) -> None:
    """The arrays ``evaluate`` returned: plots, and one JSON line a prediction (``val_`` or ``test_``)."""
    if "confusion_matrix" in extras:
        plots.confusion_matrix(extras["confusion_matrix"], meta.get("classes", []), run_dir / f"{prefix}confusion_matrix.png", title)
    if "predicted_vs_true" in extras:
        plots.predicted_vs_true(extras["predicted_vs_true"], run_dir / f"{prefix}predicted_vs_true.png", title)
    if "predictions" in extras:
        lines = "".join(json.dumps(row, default=str) + "\n" for row in extras["predictions"])
        durable.write_text(run_dir / f"{prefix or 'val_'}predictions.jsonl", lines)


def score_split(trainable: Trainable, model: torch.nn.Module, cfg: Any, split: Any) -> tuple[dict, dict]:
    """``evaluate`` over a whole split on this process's CPU, its scalars keyed ``test/...``."""
    scalars, extras = validate(trainable, model, stream.split_batches(split, cfg.batch_size), cfg, torch.device("cpu"))
    return {key.replace("val/", "test/", 1): value for key, value in scalars.items()}, extras


def load_model(trainable: Trainable, cfg: Any, meta: dict, weights: dict) -> torch.nn.Module:
    model = trainable.build_model(cfg, meta)
    model.load_state_dict(weights)
    return model.eval()


def describe_model(model: torch.nn.Module) -> dict[str, Any]:
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "architecture": str(model),
    }


def time_predictions(trainable: Trainable, model: torch.nn.Module, cfg: Any, val_split: Any) -> dict[str, Any]:
    """Milliseconds for one validation sample through the best model on this machine's CPU."""
    timings = []
    with torch.no_grad():
        for batch in stream.split_batches(val_split, 1, limit=TIMED_PREDICTIONS):
            started = time.perf_counter()
            trainable.evaluate(model, [batch], cfg)
            timings.append((time.perf_counter() - started) * 1000)
    if not timings:
        return {}
    return {"device": "cpu", "batch_size": 1, "ms_median": round(statistics.median(timings), 2), "samples": len(timings)}


def load_run(run_dir: Path, trainable: Trainable) -> tuple[Any, dict, torch.nn.Module]:
    """Config, meta and best model of a finished run, for ``platform.predict``."""
    missing = [f for f in (CONFIG_FILE, META_FILE, BEST_MODEL_FILE) if not (run_dir / f).exists()]
    if missing:
        raise UserError(f"{run_dir} is not a finished run directory (missing {', '.join(missing)})")
    cfg = config_lib.from_dict(trainable.Config, read_json(run_dir / CONFIG_FILE))
    meta = read_json(run_dir / META_FILE)
    saved = torch.load(run_dir / BEST_MODEL_FILE, map_location="cpu", weights_only=True)
    return cfg, meta, load_model(trainable, cfg, meta, saved["model"])
