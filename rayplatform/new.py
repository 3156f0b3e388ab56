"""``rayplatform new NAME``: a minimal working trainable package, in the current folder, to start from.

    rayplatform new mytoy
    rayplatform run ./mytoy --tier smoke          # seconds on a CPU, on a synthetic set
    python -m pytest mytoy                        # its own test, without Ray

``NAME/`` holds the hooks (``__init__.py``: data with a synthetic fallback, model, loss, evaluate,
predict), the config (``config.py``), the tiers and search space (``space.py``) and a test
(``tests/test_NAME.py``): a classifier of rows of numbers, to be replaced by the user's own.
"""

from __future__ import annotations

import argparse
import importlib.util
import keyword
import string
import sys
from pathlib import Path

from platform import registry
from platform.errors import UserError, exit_on_user_error

# The package's files, "${name}" standing for its name (raw strings: the code's own escapes stay).
INIT = r'''"""${name}: a classifier of rows of numbers, the smallest trainable to start from.

    rayplatform run ./${name} --tier smoke                 # a synthetic set; --data DIR for yours
    rayplatform predict runs/${name}/<run> 0.5,1.2,-0.3,0.8,0.1,0.0,2.2,-1.0

Data: a folder holding ``train.csv`` and ``val.csv`` (and optionally ``test.csv``), a ``label``
column and numeric feature columns. The hooks below are what the platform calls (the contract:
``trainables/__init__.py`` in the platform); the loop, devices, checkpoints and Ray are its own.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from platform.data.cache import cache_root, write_once
from platform.data.content_hash import content_hash
from platform.data.locations import Folder
from platform.errors import UserError

from .config import METRIC, PREPROCESS_KEYS, Config  # noqa: F401 - the contract's names

SPLITS = ("train", "val", "test")


def build_datasets(cfg: Config) -> tuple[dict[str, list[dict]], dict]:
    """Rows by split, and the facts the model and predict() need (``meta``)."""
    folder = Folder(cfg.data_dir or str(_synthetic(cfg)))
    files = {f"{split}.csv": folder.path(f"{split}.csv") for split in SPLITS if folder.is_file(f"{split}.csv")}
    if "train.csv" not in files or "val.csv" not in files:
        raise UserError(f"{folder}: needs train.csv and val.csv")
    tables = {name.removesuffix(".csv"): _read_csv(folder, name) for name in files}
    features = [column for column in tables["train"][0] if column != "label"]
    classes = sorted({row["label"] for row in tables["train"]})
    splits = {split: [_row(row, features, classes, folder.shown(f"{split}.csv")) for row in rows] for split, rows in tables.items()}
    meta = {"classes": classes, "features": features, "data_path": str(folder), "content_hash": content_hash([], files)}
    return splits, meta


def _read_csv(folder: Folder, name: str) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(folder.read_bytes(name).decode("utf-8"))))
    if not rows or "label" not in rows[0]:
        raise UserError(f"{folder.shown(name)}: needs a header with a label column, and rows")
    return rows


def _row(row: dict, features: list[str], classes: list[str], shown: str) -> dict:
    try:
        return {"features": [float(row[name]) for name in features], "label": classes.index(row["label"])}
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{shown}: a row's features are not all numbers, or its label is not in train.csv: {row}") from None


def _synthetic(cfg: Config):
    """A synthetic set in the real format, written once: each class is a cloud of points around its own center."""
    shape = f"{cfg.synthetic_rows}x{cfg.synthetic_features}-{cfg.synthetic_classes}-seed{cfg.seed}"

    def write(folder):
        rng = np.random.default_rng(cfg.seed)
        centers = rng.normal(scale=2.0, size=(cfg.synthetic_classes, cfg.synthetic_features))
        labels = rng.integers(cfg.synthetic_classes, size=cfg.synthetic_rows)
        points = centers[labels] + rng.normal(size=(cfg.synthetic_rows, cfg.synthetic_features))
        header = [f"x{i}" for i in range(cfg.synthetic_features)] + ["label"]
        cut = cfg.synthetic_rows * 4 // 5
        for split, rows in (("train", slice(0, cut)), ("val", slice(cut, None))):
            lines = [header] + [[*map(str, point), f"class{label}"] for point, label in zip(points[rows], labels[rows])]
            (folder / f"{split}.csv").write_text("\n".join(",".join(line) for line in lines) + "\n")

    return write_once(cache_root() / "${name}" / shape, write)


def preprocess(batch: dict, cfg: Config) -> dict:
    """Once per row, in Ray Data tasks, into the preprocessed store: numpy arrays in, numpy arrays out."""
    return {"x": np.stack([np.asarray(row, np.float32) for row in batch["features"]]), "label": np.asarray(batch["label"], np.int64)}


def build_model(cfg: Config, meta: dict) -> nn.Module:
    return nn.Sequential(
        nn.Linear(len(meta["features"]), cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, len(meta["classes"]))
    )


def loss(model: nn.Module, batch: dict, cfg: Config) -> tuple[torch.Tensor, dict[str, float]]:
    """One batch's training loss, and metrics the platform averages over the epoch (as train/...)."""
    logits = model(batch["x"])
    value = F.cross_entropy(logits, batch["label"])
    return value, {"loss": value.item(), "acc": (logits.argmax(1) == batch["label"]).float().mean().item()}


def evaluate(model: nn.Module, batches, cfg: Config) -> dict:
    """Validation metrics (the model is already in eval mode, under no_grad)."""
    right = total = 0
    summed = 0.0
    for batch in batches:
        logits = model(batch["x"])
        summed += F.cross_entropy(logits, batch["label"], reduction="sum").item()
        right += (logits.argmax(1) == batch["label"]).sum().item()
        total += len(batch["label"])
    return {"val/acc": right / max(total, 1), "val/loss": summed / max(total, 1)}


def predict(model: nn.Module, inputs: list[str], cfg: Config, meta: dict) -> list[dict]:
    """``rayplatform predict RUN 0.5,1.2,...``: each input a row of comma-separated numbers."""
    try:
        rows = [[float(value) for value in text.split(",")] for text in inputs]
    except ValueError:
        raise UserError("each input is a row of numbers separated by commas, like 0.5,1.2,-0.3") from None
    if any(len(row) != len(meta["features"]) for row in rows):
        raise UserError(f"each input needs {len(meta['features'])} numbers ({', '.join(meta['features'])})")
    probabilities = model(torch.tensor(rows)).softmax(1)
    predictions = []
    for text, row in zip(inputs, probabilities):
        ranked = row.argsort(descending=True)
        predictions.append({"input": text, "top": [{"label": meta["classes"][i], "prob": round(row[i].item(), 4)} for i in ranked]})
    return predictions
'''


CONFIG = r'''"""${name}'s config: read alone, without torch, by ``rayplatform run ./${name} --help`` and ``--print-config``.

Keep this file free of torch and of the rest of the package (the platform imports it by itself).
"""

from __future__ import annotations

import dataclasses

from platform.config import TrainConfig, limited

METRIC = ("val/acc", "max")  # the validation metric that picks the best checkpoint
PREPROCESS_KEYS = ()  # config keys preprocess() reads (none): every run on the same rows reuses the preprocessed store


@dataclasses.dataclass
class Config(TrainConfig):
    """Every hyperparameter, with its default and one line under it (the lines are ``--help``)."""

    epochs: int = 20  # a platform field re-declared: a new default
    hidden: int = limited(64, low=1)
    """Width of the hidden layer."""
    dropout: float = limited(0.1, low=0, high=0.99)
    """Dropout after the hidden layer."""
    synthetic_rows: int = limited(2000, low=20, synthetic=True)
    """Rows of the synthetic set written when there is no --data."""
    synthetic_features: int = limited(8, low=1, synthetic=True)
    """Numbers in each row of the synthetic set."""
    synthetic_classes: int = limited(3, low=2, synthetic=True)
    """Classes of the synthetic set."""
'''


SPACE = r'''"""${name}'s tiers (named sets of config values: ``rayplatform run ./${name} --tier smoke``) and the
search space of its sweeps (``rayplatform tune ./${name} --tiers smoke,fast``)."""

from platform.tune.distributions import choice, loguniform, uniform

TIERS = {
    "smoke": {"synthetic_rows": 200, "hidden": 16, "epochs": 2, "batch_size": 32, "lr": 0.01},  # seconds on a CPU: tests, a first try
    "fast": {},  # the defaults: the tier a run without --tier trains
}

SPACE = {
    "lr": loguniform(1e-4, 1e-2),
    "hidden": choice([16, 32, 64, 128]),
    "dropout": uniform(0.0, 0.5),
}
'''


TEST = r'''"""${name}'s own checks, without Ray: ``python -m pytest ${name}`` from the folder holding ${name}/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import rayplatform  # noqa: F401 - before `platform`: makes it the platform's package, not Python's module of that name
from platform import registry

FOLDER = Path(__file__).resolve().parents[1]


def batch_of(trainable, rows: list[dict], cfg) -> dict:
    """Rows as preprocess() gets them (numpy columns) and as loss() gets its output (tensors)."""
    columns = {name: np.array([row[name] for row in rows]) for name in rows[0]}
    return {name: torch.as_tensor(values) for name, values in trainable.preprocess(columns, cfg).items()}


def test_${name}_keeps_the_contract_and_learns_its_smoke_set():
    trainable = registry.load(str(FOLDER))  # the contract's checks, as every command makes them
    cfg = trainable.Config(**trainable.space.TIERS["smoke"])
    splits, meta = trainable.build_datasets(cfg)
    train, val = batch_of(trainable, splits["train"], cfg), batch_of(trainable, splits["val"], cfg)
    torch.manual_seed(0)
    model = trainable.build_model(cfg, meta)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _step in range(50):
        value, _metrics = trainable.loss(model, train, cfg)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        assert trainable.evaluate(model, [val], cfg)["val/acc"] > 0.8
        inputs = [",".join(map(str, row["features"])) for row in splits["val"][:2]]
        predicted = trainable.predict(model, inputs, cfg, meta)
    assert [p["input"] for p in predicted] == inputs and predicted[0]["top"][0]["label"] in meta["classes"]
'''

FILES = {"__init__.py": INIT, "config.py": CONFIG, "space.py": SPACE, "tests/test_${name}.py": TEST}


def check_name(name: str, folder: Path) -> None:
    """The package is imported by its name: it must be one, free, and not hide another module."""
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UserError(f"{name!r} cannot be a package's name: use letters, digits and _, not starting with a digit")
    if folder.exists():
        raise UserError(f"{folder} already exists: choose another name (nothing was written)")
    if name in registry.stems():
        raise UserError(f"{name} is a built-in trainable: choose another name")
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.origin is not None:
        raise UserError(f"{name} is the name of the module {name} ({spec.origin}), which the package would hide: choose another name")


def write(name: str, where: Path) -> Path:
    """``where/name/``, a working trainable package of that name."""
    folder = where / name
    check_name(name, folder)
    for relative, template in FILES.items():
        path = folder / string.Template(relative).substitute(name=name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(string.Template(template).substitute(name=name), encoding="utf-8")
    return folder


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayplatform new", description="Write a minimal working trainable package NAME/ here.")
    parser.add_argument("name", help="the package's name (a Python identifier): the folder ./NAME and the trainable's stem")
    name = parser.parse_args(argv).name
    folder = write(name, Path.cwd())
    print(f"wrote {folder}: __init__.py (hooks), config.py, space.py (tiers, search space), tests/test_{name}.py")
    print(f"next: rayplatform run ./{name} --tier smoke   and   python -m pytest {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
