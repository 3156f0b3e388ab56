"""Adding a trainable touches its package and its search space, nothing else: a toy one, written
beside a copy of the platform, shows its tiers in --help, trains and predicts; a misspelt hook in it is
one error line at load, before Ray is asked for anything.

    .venv/bin/python -m pytest tests/test_new_trainable.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO, TEST_ENV, last_line

TOY_CONFIG = '''"""The toy's config."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from platform.config import TrainConfig

METRIC = ("val/acc", "max")


@dataclasses.dataclass
class Config(TrainConfig):
    rows: int = 200
    """Synthetic rows: four numbers each, labelled by the sign of their sum."""

    LIMITS: ClassVar[dict] = {"rows": (8, None)}
'''

TOY_TRAINABLE = '''"""A toy: is the sum of four numbers positive?"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.toy.config import METRIC, Config  # noqa: F401 - the contract's names


def build_datasets(cfg: Config):
    numbers = np.random.default_rng(cfg.seed).normal(size=(cfg.rows, 4))
    rows = [{"x": row.tolist(), "label": int(row.sum() > 0)} for row in numbers]
    cut = len(rows) * 3 // 4
    return {"train": rows[:cut], "val": rows[cut:]}, {"classes": ["negative", "positive"]}


def preprocess(batch: dict, cfg: Config) -> dict:
    return {"x": np.stack([np.asarray(x, np.float32) for x in batch["x"]]), "label": np.asarray(batch["label"], np.int64)}


def build_model(cfg: Config, meta: dict) -> nn.Module:
    return nn.Linear(4, len(meta["classes"]))


def loss(model: nn.Module, batch: dict, cfg: Config):
    logits = model(batch["x"])
    value = F.cross_entropy(logits, batch["label"])
    return value, {"loss": value.item(), "acc": (logits.argmax(1) == batch["label"]).float().mean().item()}


def evaluate(model: nn.Module, batches, cfg: Config) -> dict:
    right = total = 0
    for batch in batches:
        right += (model(batch["x"]).argmax(1) == batch["label"]).sum().item()
        total += len(batch["label"])
    return {"val/acc": right / total}


def predict(model: nn.Module, inputs: list[str], cfg: Config, meta: dict) -> list[dict]:
    x = torch.tensor([[float(v) for v in text.split(",")] for text in inputs])
    probs = model(x).softmax(1)
    return [{"input": text, "top": [{"label": meta["classes"][int(p.argmax())], "prob": float(p.max())}]}
            for text, p in zip(inputs, probs)]
'''

TOY_SPACE = '''"""The toy's tiers and search space."""

from platform.distributions import loguniform

TIERS = {"smoke": {"epochs": 2, "batch_size": 16, "lr": 0.05}, "fast": {"epochs": 5}}
SPACE = {"lr": loguniform(1e-3, 1e-1)}
'''


def _platform_copy_with_the_toy(root: Path) -> Path:
    for folder in ("platform", "trainables", "search_spaces"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "trainables" / "toy").mkdir()
    (root / "trainables" / "toy" / "config.py").write_text(TOY_CONFIG)
    (root / "trainables" / "toy" / "__init__.py").write_text(TOY_TRAINABLE)
    (root / "search_spaces" / "toy.py").write_text(TOY_SPACE)
    return root


def _command(root: Path, ray_address: str, module: str, *args: str) -> subprocess.CompletedProcess:
    # Only the copy on PYTHONPATH: nothing of the toy may come from the repository itself.
    env = {**os.environ, **TEST_ENV, "RAY_ADDRESS": ray_address, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, "-m", f"platform.{module}", *args], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )


def test_a_new_trainable_is_its_package_and_its_search_space_alone(tmp_path, ray_address):
    root = _platform_copy_with_the_toy(tmp_path / "repo")
    storage = tmp_path / "runs"
    shown = _command(root, ray_address, "run", "toy", "--help")
    assert "tiers of toy" in shown.stdout and "  rows = 200" in shown.stdout

    trained = _command(root, ray_address, "run", "toy", "--tier", "smoke", "--storage", str(storage), "--name", "first")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "[toy] finished: 2 epochs" in trained.stdout
    predicted = _command(root, ray_address, "predict", str(storage / "toy" / "first"), "1,1,1,1", "--json")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert '"label": "positive"' in predicted.stdout

    # A typo in an optional hook would be silently ignored: it is an error naming both, before any work.
    init = root / "trainables" / "toy" / "__init__.py"
    init.write_text(init.read_text() + "\n\ndef epoch_shedule(epoch, cfg):\n    return {}\n")
    misspelt = _command(root, ray_address, "run", "toy", "--tier", "smoke", "--storage", str(storage), "--name", "second")
    assert misspelt.returncode == 2
    assert last_line(misspelt.stderr) == (
        "error: trainables.toy defines epoch_shedule: did you mean epoch_schedule? "
        "(optional names: on_epoch_start, epoch_schedule, train_filter, "
        "add_predict_arguments, run_warnings, baseline, PREPROCESS_KEYS)"
    )
    assert not (storage / "toy" / "second").exists()
