"""The notebook API: train a trainable, load a run, predict with it, in this Python process.

    import rayplatform
    run = rayplatform.train("asl", tier="smoke", sets={"epochs": 2}, storage="runs")
    again = rayplatform.Run("runs/asl/" + run.name)
    again.predict(["sequence.parquet"])

``train`` is ``rayplatform run`` (``platform/run.py``) with the same options; bad input raises
``platform.errors.UserError`` with the message the command would print. Ray starts in this
process on the first call and stays up for the next ones.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pandas as pd

from platform import artifacts, predict, registry, run_files
from platform import run as run_command
from platform import storage as storage_lib


class Run:
    """A run directory (``<storage>/<stem>/<name>``): its manifest, config, history and best model."""

    def __init__(self, path: str | Path):
        self.path = storage_lib.fetched(str(path))  # a run URI's files, copied to this machine
        self.stem = predict.stem_of(self.path)
        self.trainable = registry.load(self.stem)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def manifest(self) -> dict[str, Any]:
        return artifacts.read_json(self.path / artifacts.MANIFEST_FILE)

    @property
    def config(self) -> Any:
        return self._loaded[0]

    @property
    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.path / artifacts.HISTORY_FILE)

    @functools.cached_property
    def _loaded(self) -> tuple[Any, dict, Any]:
        return artifacts.load_run(self.path, self.trainable)

    def predict(self, inputs: list[str], **options: Any) -> list[dict]:
        """The trainable's predictions for ``inputs`` (as ``rayplatform predict``), on the CPU."""
        import torch

        cfg, meta, model = self._loaded
        with torch.no_grad():
            return self.trainable.predict(model, [str(i) for i in inputs], cfg, meta, **options)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


def train(
    stem: str,
    tier: str | None = None,
    *,
    sets: dict[str, Any] | None = None,
    config: str | None = None,
    data: str | None = None,
    storage: str = run_command.DEFAULT_STORAGE,
    name: str | None = None,
    workers: int = 1,
    gpu: bool = False,
    address: str | None = None,
    tracker: str | None = None,
) -> Run:
    """Train ``stem`` as ``rayplatform run`` does and return the finished run."""
    name = name or run_files.default_name(tier or registry.DEFAULT_TIER)
    argv = [stem, "--storage", storage, "--name", name, "--workers", str(workers)]
    for flag, value in (("--tier", tier), ("--config", config), ("--data", data), ("--address", address), ("--tracker", tracker)):
        if value:
            argv += [flag, str(value)]
    for key, value in (sets or {}).items():
        argv += ["--set", f"{key}={','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"]
    if gpu:
        argv.append("--gpu")
    run_command.main.__wrapped__(argv)  # errors raise here instead of ending the process
    location = storage_lib.locate(storage, stem, name)
    return Run(location.remote or location.local)
