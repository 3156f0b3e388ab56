"""The trainable contract as code: what a trainable and its search space must and may define, as types.

Checked by ``platform.registry.load`` for every command that takes a stem
(``python -m platform.run asl``), so a missing or misspelt hook, or one taking other arguments than
the platform passes, is one error naming the trainable's file and the hook before anything runs.
:class:`Hooks` and :class:`OptionalHooks` give the hooks' signatures (their meaning is documented in
``trainables/__init__.py``); a loaded trainable is a :class:`Trainable`, whose optional hooks are the
trainable's own or the defaults below, so the platform calls every hook without asking whether it
exists; its search space is a :class:`SearchSpace`.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import sys
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, Protocol

from platform import config as config_lib
from platform.config import TrainConfig
from platform.errors import UserError

REQUIRED_HOOKS = ("build_datasets", "preprocess", "build_model", "loss", "evaluate", "predict")
OPTIONAL_HOOKS = ("on_epoch_start", "epoch_schedule", "train_filter", "add_predict_arguments", "run_warnings", "baseline")
OPTIONAL_CONSTANTS = ("PREPROCESS_KEYS",)
SPACE_REQUIRED = ("TIERS", "SPACE")
SPACE_OPTIONAL = ("ALIASES", "EPOCH_SECONDS")
METRIC_MODES = ("max", "min")


class Hooks(Protocol):
    """What every trainable package defines (``trainables/__init__.py`` says what each does)."""

    Config: type[TrainConfig]
    METRIC: tuple[str, str]

    def build_datasets(self, cfg: Any) -> tuple[dict[str, list[dict]], dict]: ...
    def preprocess(self, batch: dict, cfg: Any) -> dict: ...
    def build_model(self, cfg: Any, meta: dict) -> Any: ...
    def loss(self, model: Any, batch: dict, cfg: Any) -> tuple[Any, dict[str, float]]: ...
    def evaluate(self, model: Any, batches: Iterable[dict], cfg: Any) -> dict[str, Any]: ...
    def predict(self, model: Any, inputs: list[str], cfg: Any, meta: dict, **options: Any) -> list[dict]: ...


class OptionalHooks(Protocol):
    """What a trainable package may define besides (the defaults below stand in for the rest)."""

    def on_epoch_start(self, model: Any, epoch: int, cfg: Any) -> None: ...
    def epoch_schedule(self, epoch: int, cfg: Any) -> dict[str, float]: ...
    def train_filter(self, batch: dict, schedule: dict[str, float], cfg: Any) -> Any: ...
    def add_predict_arguments(self, parser: Any) -> None: ...
    def run_warnings(self, manifest: dict) -> list[str]: ...
    def baseline(self, read: Callable, cfg: Any, meta: dict) -> Any: ...


def _no_epoch_start(model: Any, epoch: int, cfg: Any) -> None:
    return None


def _no_schedule(epoch: int, cfg: Any) -> dict[str, float]:
    return {}


def _no_predict_arguments(group: Any) -> None:
    return None


def _no_run_warnings(manifest: dict) -> list[str]:
    return []


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A trainable's ``search_spaces`` module as data: its tiers, aliases (the seeds' own mode
    names), the distributions Tune searches and each tier's measured seconds an epoch."""

    name: str
    stem: str  # the trainable's: where a sweep saves its tiers (``<storage>/<stem>/tiers/``)
    TIERS: dict[str, dict[str, Any]]
    SPACE: dict[str, Any] | Callable
    ALIASES: dict[str, str] = dataclasses.field(default_factory=dict)
    EPOCH_SECONDS: dict[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, module: ModuleType, stem: str) -> SearchSpace:
        """``module``'s constants; one missing or of the wrong shape is a ``UserError`` naming its file,
        whichever command reads it (``--help`` reads it without :func:`check`)."""
        return cls(module.__name__, stem, **_space_constants(module))


def _space_constants(module: ModuleType) -> dict[str, Any]:
    name, values = shown(module), vars(module)
    for constant in SPACE_REQUIRED:
        if constant not in values:
            raise UserError(f"search space {name} does not define {constant} (see trainables/__init__.py)")
    tiers, aliases = values["TIERS"], values.get("ALIASES", {})
    if not (isinstance(tiers, dict) and tiers and all(isinstance(tier, dict) for tier in tiers.values())):
        raise UserError(f"search space {name}: TIERS must be a dict of tier name to a dict of config values")
    targets = aliases.values() if isinstance(aliases, dict) else [aliases]
    missing = sorted(str(target) for target in targets if not (isinstance(target, str) and target in tiers))
    if missing:
        raise UserError(f"search space {name}: ALIASES point at {', '.join(missing)}, which TIERS lacks")
    return {"TIERS": tiers, "SPACE": values["SPACE"], "ALIASES": aliases, "EPOCH_SECONDS": values.get("EPOCH_SECONDS", {})}


@dataclasses.dataclass(frozen=True)
class Trainable:
    """A trainable checked against the contract, resolved once in a process and passed around: its
    stem, its package, its search space, and every hook (an optional one the package lacks is the
    default that does nothing). A Ray process is given the stem and loads its own
    (``platform.registry.load``): modules do not travel."""

    stem: str
    reference: str  # what a run's manifest finds it again by: the stem, or a folder's path (platform/registry.py)
    package: ModuleType
    space: SearchSpace
    Config: type[TrainConfig]
    METRIC: tuple[str, str]
    build_datasets: Callable
    preprocess: Callable
    build_model: Callable
    loss: Callable
    evaluate: Callable
    predict: Callable
    PREPROCESS_KEYS: tuple[str, ...] | None = None
    on_epoch_start: Callable = _no_epoch_start
    epoch_schedule: Callable = _no_schedule
    train_filter: Callable | None = None  # None: every row of a shuffle window trains
    add_predict_arguments: Callable = _no_predict_arguments
    run_warnings: Callable = _no_run_warnings
    baseline: Callable | None = None  # None: no trivial baseline beside the metric

    @classmethod
    def of(cls, stem: str, package: ModuleType, space: ModuleType, reference: str | None = None) -> Trainable:
        """``package`` and ``space`` as a Trainable; call :func:`check` first."""
        defined = vars(package)
        names = ("Config", "METRIC", *REQUIRED_HOOKS, *OPTIONAL_CONSTANTS, *OPTIONAL_HOOKS)
        found = {name: defined[name] for name in names if name in defined}
        if found.get("PREPROCESS_KEYS") is not None:
            found["PREPROCESS_KEYS"] = tuple(found["PREPROCESS_KEYS"])
        return cls(stem=stem, reference=reference or stem, package=package, space=SearchSpace.of(space, stem), **found)


def check(trainable: ModuleType, space: ModuleType) -> None:
    """Raises ``UserError`` for the first way ``trainable`` or ``space`` breaks the contract."""
    name, defined = shown(trainable), vars(trainable)
    for hook in REQUIRED_HOOKS:
        if not callable(defined.get(hook)):
            raise UserError(f"trainable {name} does not define {hook}() (see trainables/__init__.py)")
    _check_metric(name, defined.get("METRIC"))
    config = defined.get("Config")
    if not (isinstance(config, type) and issubclass(config, TrainConfig)):
        raise UserError(f"trainable {name}: Config must be a dataclass subclassing platform.config.TrainConfig")
    config_lib.check_class(config)
    _check_misspelt(trainable, OPTIONAL_HOOKS + OPTIONAL_CONSTANTS, REQUIRED_HOOKS + ("METRIC", "Config"))
    for protocol, hooks in ((Hooks, REQUIRED_HOOKS), (OptionalHooks, OPTIONAL_HOOKS)):
        for hook in hooks:
            if callable(defined.get(hook)):
                _check_signature(trainable, hook, defined[hook], protocol)
    fields = {field.name for field in dataclasses.fields(config)}
    _check_keys(name, "PREPROCESS_KEYS", defined.get("PREPROCESS_KEYS", ()), fields)
    _check_space(space, fields)


def shown(module: ModuleType) -> str:
    """A module as errors name it: its name, and its file (a user's trainable lives anywhere)."""
    where = vars(module).get("__file__")
    return f"{module.__name__} ({where})" if where else module.__name__


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
    """A name defined in ``module``, or in a module of its package and imported into it, that is one
    typo away from an optional one (``epoch_shedule``) would be silently ignored: an error naming
    the file that defines it instead."""
    known = set(optional) | set(required)
    for attribute, value in vars(module).items():
        defining = _defining(module, value)
        if attribute.startswith("_") or attribute in known or defining is None:
            continue
        near = difflib.get_close_matches(attribute, optional, n=1, cutoff=0.85)
        if near:
            raise UserError(f"{shown(defining)} defines {attribute}: did you mean {near[0]}? (optional names: {', '.join(optional)})")


def _check_keys(name: str, what: str, keys: object, fields: set[str]) -> None:
    unknown = sorted(set(keys) - fields) if isinstance(keys, (dict, list, tuple, set)) else ["<not a collection>"]
    if unknown:
        raise UserError(f"{name}: {what} names {', '.join(unknown)}, which the Config does not have")


def _check_space(space: ModuleType, fields: set[str]) -> None:
    name, constants = shown(space), _space_constants(space)
    _check_misspelt(space, SPACE_OPTIONAL, SPACE_REQUIRED)
    for tier, values in constants["TIERS"].items():
        _check_keys(name, f"tier {tier!r}", values, fields)
    if isinstance(constants["SPACE"], dict):  # a callable is a conditional space, checked when it samples
        _check_keys(name, "SPACE", constants["SPACE"], fields)


def _check_signature(trainable: ModuleType, hook: str, function: Callable, protocol: type) -> None:
    """A hook that cannot take the arguments the platform passes would fail in every Ray worker, each
    retry: one error naming its file and both signatures instead (a builtin may have no signature to read)."""
    _self, *called = inspect.signature(getattr(protocol, hook)).parameters.values()
    try:
        defined = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return
    try:
        inspect.Signature(defined).bind(*(p for p in called if p.kind is not p.VAR_KEYWORD))
    except TypeError:
        where = shown(_defining(trainable, function) or trainable)
        raise UserError(f"{where} defines {hook}({_parameters(defined)}): the platform calls {hook}({_parameters(called)})") from None


def _parameters(parameters: list[inspect.Parameter]) -> str:
    """Parameters as a call shows them: names, without types or defaults."""
    prefixes = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return ", ".join(prefixes.get(p.kind, "") + p.name for p in parameters)


def _defining(module: ModuleType, value: object) -> ModuleType | None:
    """The module of ``module``'s package that defines ``value``; None when it is imported from
    elsewhere (torch, a shared helper)."""
    where = getattr(value, "__module__", None) or module.__name__
    if where != module.__name__ and not where.startswith(f"{module.__name__}."):
        return None
    return module if where == module.__name__ else sys.modules.get(where, module)
