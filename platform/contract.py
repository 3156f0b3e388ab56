"""The trainable contract as code: what a trainable and its search space must and may define.

Checked by ``platform.registry.load`` for every command that takes a stem
(``python -m platform.run asl``), so a missing or misspelt hook is one error naming the trainable and
the hook before anything runs. The hooks' meaning is documented in ``trainables/__init__.py``.
"""

from __future__ import annotations

import dataclasses
import difflib
from types import ModuleType
from typing import Any

from platform.config import TrainConfig
from platform.errors import UserError

REQUIRED_HOOKS = ("build_datasets", "preprocess", "build_model", "loss", "evaluate", "predict")
OPTIONAL_HOOKS = ("on_epoch_start", "epoch_schedule", "train_filter", "add_predict_arguments", "run_warnings", "baseline")
OPTIONAL_CONSTANTS = ("PREPROCESS_KEYS",)
SPACE_REQUIRED = ("TIERS", "SPACE")
SPACE_OPTIONAL = ("ALIASES", "EPOCH_SECONDS")
METRIC_MODES = ("max", "min")


@dataclasses.dataclass(frozen=True)
class Trainable:
    """A trainable checked against the contract, resolved once in a process and passed around:
    its stem, its package and its search space. Hooks and constants are read through it
    (``trainable.build_model(cfg, meta)``, ``trainable.METRIC``). A Ray process is given the stem
    and loads its own (``platform.registry.load``): modules do not travel."""

    stem: str
    package: ModuleType
    space: ModuleType

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("stem", "package", "space"):  # copy's and pickle's probes
            raise AttributeError(name)
        return getattr(self.package, name)


def check(trainable: ModuleType, space: ModuleType) -> None:
    """Raises ``UserError`` for the first way ``trainable`` or ``space`` breaks the contract."""
    name = trainable.__name__
    for hook in REQUIRED_HOOKS:
        if not callable(getattr(trainable, hook, None)):
            raise UserError(f"trainable {name} does not define {hook}() (see trainables/__init__.py)")
    _check_metric(name, getattr(trainable, "METRIC", None))
    config = getattr(trainable, "Config", None)
    if not (isinstance(config, type) and issubclass(config, TrainConfig) and dataclasses.is_dataclass(config)):
        raise UserError(f"trainable {name}: Config must be a dataclass subclassing platform.config.TrainConfig")
    _check_misspelt(trainable, OPTIONAL_HOOKS + OPTIONAL_CONSTANTS, REQUIRED_HOOKS + ("METRIC", "Config"))
    fields = {field.name for field in dataclasses.fields(config)}
    _check_keys(name, "PREPROCESS_KEYS", getattr(trainable, "PREPROCESS_KEYS", ()), fields)
    _check_space(space, fields)


def _check_metric(name: str, metric: object) -> None:
    if not (
        isinstance(metric, tuple)
        and len(metric) == 2
        and isinstance(metric[0], str)
        and metric[0].startswith("val/")
        and metric[1] in METRIC_MODES
    ):
        raise UserError(f"trainable {name}: METRIC must be ('val/<name>', 'max' or 'min'), not {metric!r}")


def _check_misspelt(module: ModuleType, optional: tuple[str, ...], required: tuple[str, ...]) -> None:
    """A name defined in ``module`` that is one typo away from an optional one (``epoch_shedule``)
    would be silently ignored: an error instead."""
    known = set(optional) | set(required)
    for attribute in vars(module):
        if attribute.startswith("_") or attribute in known:
            continue
        value = getattr(module, attribute)
        if getattr(value, "__module__", module.__name__) != module.__name__:
            continue  # imported, not defined here
        near = difflib.get_close_matches(attribute, optional, n=1, cutoff=0.85)
        if near:
            raise UserError(f"{module.__name__} defines {attribute}: did you mean {near[0]}? (optional names: {', '.join(optional)})")


def _check_keys(name: str, what: str, keys: object, fields: set[str]) -> None:
    unknown = sorted(set(keys) - fields) if isinstance(keys, (dict, list, tuple, set)) else ["<not a collection>"]
    if unknown:
        raise UserError(f"{name}: {what} names {', '.join(unknown)}, which the Config does not have")


def _check_space(space: ModuleType, fields: set[str]) -> None:
    name = space.__name__
    for constant in SPACE_REQUIRED:
        if not hasattr(space, constant):
            raise UserError(f"search space {name} does not define {constant}")
    _check_misspelt(space, SPACE_OPTIONAL, SPACE_REQUIRED)
    if not isinstance(space.TIERS, dict) or not space.TIERS:
        raise UserError(f"search space {name}: TIERS must be a dict of tier name to config values")
    for tier, values in space.TIERS.items():
        _check_keys(name, f"tier {tier!r}", values, fields)
    if isinstance(space.SPACE, dict):  # a callable is a conditional space, checked when it samples
        _check_keys(name, "SPACE", space.SPACE, fields)
    missing = sorted(set(getattr(space, "ALIASES", {}).values()) - set(space.TIERS))
    if missing:
        raise UserError(f"search space {name}: ALIASES point at {', '.join(missing)}, which TIERS lacks")
