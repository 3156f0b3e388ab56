"""The notebook API: train a trainable, load a run, predict with it, in this Python process.

    import rayplatform
    run = rayplatform.train("asl", tier="smoke", sets={"epochs": 2}, storage="runs")
    again = rayplatform.Run("runs/asl/" + run.name)
    again.predict(["sequence.parquet"])

``train`` is ``rayplatform run`` (``platform/run.py``) with the same options; bad input raises
``platform.errors.UserError`` with the message the command would print. Ray starts in this
process on the first call and stays up for the next ones; Ray's workers get the packages of the
trainables of your own (``train("./mytoy")``) named before then, so train those first.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pandas as pd

from platform import predict, registry
from platform import run as run_command
from platform.launching import DEFAULT_STORAGE, Launch
from platform.runs import artifacts
from platform.runs import storage as storage_lib
from platform.runs.opening import Request


class Run:
    """A run directory (``<storage>/<stem>/<name>``): its manifest, config, history and best model."""

    def __init__(self, path: str | Path):
        self.path = storage_lib.fetched(str(path))  # a run URI's files, copied to this machine
        self.trainable = registry.load(predict.trainable_of(self.path))
        self.stem = self.trainable.stem

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
    storage: str = DEFAULT_STORAGE,
    name: str | None = None,
    workers: int = 1,
    gpu: bool = False,
    address: str | None = None,
    tracker: str | None = None,
) -> Run:
    """Train ``stem`` as ``rayplatform run`` does and return the finished run. ``stem`` names a
    trainable as the command's argument does: ``"asl"``, ``"./mytoy"``, ``"mypkg.mytoy"``, a plugin.
    ``workers=0``: local mode, training in this process without Ray Train's worker group (seconds
    sooner to the first step), with no worker restarts: a crash ends the run, ``--resume`` continues it."""
    launch = Launch(workers=workers, gpu=gpu, storage=storage, name=name, address=address, tracker=tracker).check()
    listed = {key: ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value for key, value in (sets or {}).items()}
    request = Request(registry.find(stem).stem, tier, tuple(f"{key}={value}" for key, value in listed.items()), data or "", config)
    location, _manifest = run_command.start(request, launch)
    return Run(location.remote or location.local)
