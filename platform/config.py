"""Config: dataclasses resolved one way, defaults -> tier -> config file -> trial -> ``--data`` -> ``--set``.

Used by ``python -m platform.run asl --tier fast --config my.yaml --data DIR --set lr=1e-3 --set epochs=5``
(and by tune and predict). A config file is a flat YAML or JSON mapping of keys to values; a run
directory's ``config.json`` is one, so any run can be started again from it. Every trainable's
``Config`` subclasses :class:`TrainConfig`, overriding defaults by re-declaring a field. A field
gives its limits beside it (:func:`limited`). Unknown keys (and keys that are not text), values of
the wrong type (a single value for a tuple field), a choice outside a ``Literal`` field's values, a
number outside its limits (each item of a tuple field), an integer beyond 64 bits and a float that
is not finite are errors that name the key (or ``--data``), raised before Ray starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import typing
from pathlib import Path
from typing import Any, Literal

from platform.errors import UserError
from platform.runs import durable

LIMITS_KEY, SYNTHETIC_KEY = "limits", "synthetic"


def limited(default: Any, *, low: float | None = None, high: float | None = None, synthetic: bool = False) -> Any:
    """A config field whose value (each item of a tuple) lies in [low, high], None unbounded, as
    ``dim: int = limited(192, low=2)``; ``synthetic``: it only shapes the built-in synthetic set
    (``--help`` lists it apart). A subclass re-declaring the field for another default
    (``epochs: int = 300``) keeps these limits; limits it gives as well only narrow them (:func:`limits`)."""
    if low is not None and high is not None and low > high:
        raise ValueError(f"limited({default!r}, low={low!r}, high={high!r}): low is above high")
    bounds = {LIMITS_KEY: (low, high)} if (low, high) != (None, None) else {}
    return dataclasses.field(default=default, metadata={**bounds, SYNTHETIC_KEY: synthetic})


@dataclasses.dataclass
class TrainConfig:
    """What the platform's training loop reads; a trainable adds its own fields."""

    data_dir: str = ""
    """Dataset folder in the trainable's real on-disk format; empty: a cached synthetic set."""
    seed: int = limited(0, low=0)  # numpy's generators take no negative seed
    """Seed for weights, data order and dropout; a run is reproducible from it on CPU."""
    epochs: int = limited(10, low=1)
    """Maximum number of epochs."""
    min_steps: int = limited(0, low=0)
    """Train at least this many optimizer steps: on a small dataset epochs (and patience) grow to fit them; 0: epochs alone."""
    batch_size: int = limited(32, low=1)
    """Batch size per worker."""
    lr: float = limited(1e-3, low=1e-12)
    """Peak learning rate (AdamW)."""
    weight_decay: float = limited(0.01, low=0)
    """AdamW weight decay."""
    scheduler: Literal["none", "cosine", "cosine_restarts", "linear_warmup"] = "cosine"
    """Learning-rate schedule: none, cosine or cosine_restarts stepped each epoch; linear_warmup stepped each optimizer step."""
    restart_period: int = limited(50, low=1)
    """cosine_restarts: epochs in the first cycle (T_0)."""
    restart_mult: int = limited(2, low=1)
    """cosine_restarts: growth of each following cycle (T_mult)."""
    min_lr_ratio: float = limited(0.01, low=0, high=1)
    """Lowest learning rate of the cosine and linear schedules, as a share of lr (eta_min = lr * ratio)."""
    warmup_ratio: float = limited(0.1, low=0, high=1)
    """linear_warmup: share of the run's optimizer steps over which lr rises from 0, before it falls linearly to eta_min."""
    grad_accum_steps: int = limited(1, low=1)
    """Batches whose gradients add up before one optimizer step."""
    grad_clip: float = limited(0.0, low=0)
    """Clip the gradient norm to this value; 0 turns clipping off."""
    ema_decay: float = limited(0.0, low=0, high=0.9999)
    """Validate, keep and test a moving average of the weights, updated every optimizer step (0.998: about its last 500); 0: off."""
    patience: int = limited(0, low=0)
    """Early stopping: epochs without a better validation metric before stopping; 0 turns it off."""
    amp: bool = True
    """Mixed precision (and cuDNN benchmark) when training on a GPU; ignored on CPU."""
    checkpoint_every: int = limited(1, low=1)
    """Checkpoint every N epochs (the best and the last epochs are always checkpointed)."""
    checkpoint_every_steps: int = limited(0, low=0)
    """Also checkpoint inside an epoch every N optimizer steps, with the position in it; 0: only at epoch ends."""
    keep_checkpoints: int = limited(2, low=0)
    """Best checkpoints kept by the trainable's METRIC (the latest is kept as well); 0 keeps every one."""
    shuffle_buffer: int = limited(4096, low=1)
    """Rows shuffled together: the training order visits windows of this many rows of shards."""
    shard_rows: int = limited(256, low=1)
    """Rows a preprocessed store shard holds (part of the store's identity)."""
    bucket_by_length: bool = True
    """Batch variable-length rows of similar length together (less padding); the order stays seeded."""

    def validate(self) -> None:
        """Rules between fields that their limits cannot state (a width divisible by the heads): a
        trainable's Config raises ``UserError`` naming the keys. Run with the limits, before Ray starts."""


def field_docs(config_cls: type) -> dict[str, str]:
    """The one-line docstring under each field, read from the source (they double as --help)."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    for cls in reversed(config_cls.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        body = ast.parse(inspect.getsource(cls)).body[0].body
        for node, following in zip(body, body[1:]):
            is_doc = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
            if isinstance(node, ast.AnnAssign) and is_doc:
                docs[node.target.id] = str(following.value.value).strip()
    return docs


def _field_types(config_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean")


def coerce(key: str, value: Any, kind: Any) -> Any:
    """Value as the field's type; strings are parsed (from --set), other values are checked."""
    try:
        if kind is bool:
            return _parse_bool(value) if isinstance(value, str) else _exact(value, bool)
        if kind is int:
            if isinstance(value, str):
                return int(value)
            return _exact(value, int)
        if kind is float:
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                return float(value)
            raise ValueError(f"{value!r} is not a number")
        if kind is str:
            return _exact(value, str)
        if typing.get_origin(kind) is Literal:
            choices = typing.get_args(kind)
            if value not in choices:
                raise ValueError(f"{value!r} is not one of {', '.join(map(str, choices))}")
            return value
        if typing.get_origin(kind) is tuple:
            if not isinstance(value, (str, list, tuple)):
                raise ValueError(f"{value!r} is not a list")
            items = value.split(",") if isinstance(value, str) else value
            (item_kind, *_rest) = typing.get_args(kind)
            return tuple(coerce(key, item, item_kind) for item in items)
    except (ValueError, OverflowError) as err:  # OverflowError: an int too large for a float
        raise UserError(f"config key {key!r} expects {getattr(kind, '__name__', kind)}: {err}") from None
    raise UserError(f"config key {key!r} has an unsupported type {kind}")


def _exact(value: Any, kind: type) -> Any:
    # Exact type: bool is an int subclass, and True must not pass as an int.
    if type(value) is not kind:
        raise ValueError(f"{value!r} is not {kind.__name__}")
    return value


def apply(cfg: Any, updates: dict[str, Any], source: str) -> Any:
    """A copy of ``cfg`` with ``updates``; an unknown key is an error naming it and its source."""
    kinds = _field_types(type(cfg))
    not_text = [key for key in updates if not isinstance(key, str)]
    if not_text:
        raise UserError(f"config key {not_text[0]!r} in {source} is not a name: keys are text, like 'lr'")
    unknown = sorted(set(updates) - set(kinds))
    if unknown:
        raise UserError(f"unknown config key {unknown[0]!r} in {source} (see --help for the keys of {_stem(type(cfg))})")
    typed = {key: coerce(key, value, kinds[key]) for key, value in updates.items()}
    return dataclasses.replace(cfg, **typed)


def _stem(config_cls: type) -> str:
    """The trainable's stem: ``asl`` for ``trainables.asl.config.Config`` (or ``trainables.asl``), its
    package's name for a trainable of the user's (``mytoy.config``, ``mypkg.mytoy.config``)."""
    module = config_cls.__module__.removesuffix(".config")
    parts = module.split(".")
    return parts[1] if parts[0] == "trainables" and len(parts) > 1 else module


def check_class(config_cls: type) -> type:
    """``config_cls``, unless the platform would read it wrong: without its own ``@dataclass`` it has only
    its base's fields; the old ``LIMITS`` dict bounds nothing (:func:`limited` does now)."""
    where = getattr(sys.modules.get(config_cls.__module__), "__file__", None)
    named = f"{_stem(config_cls)}'s Config" + (f" ({where})" if where else "")
    if "__dataclass_fields__" not in vars(config_cls):
        raise UserError(f"{named} must be a @dataclasses.dataclass (subclassing platform.config.TrainConfig)")
    if hasattr(config_cls, "LIMITS"):
        raise UserError(
            f"{named} declares LIMITS: limits now go beside each field, e.g. hidden: int = limited(64, low=1) (platform/config.py)"
        )
    return config_cls


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """``["lr=1e-3", "epochs=5"]`` as a dict; a pair without ``=`` is an error."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value, got {pair!r}")
        parsed[key.strip()] = value.strip()
    return parsed


def read_file(path: str) -> dict[str, Any]:
    """A config file's keys and values: YAML (``.yaml``/``.yml``) or JSON, one flat mapping."""
    import yaml

    try:
        source = Path(path).expanduser()
        text = source.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"--config {path}: cannot read it ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise UserError(f"--config {path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})") from None
    except (RuntimeError, ValueError) as err:  # ~name of no user; a NUL byte
        raise UserError(f"--config {path!r}: not a file's path ({err})") from None
    kind = "JSON" if source.suffix == ".json" else "YAML"
    try:
        values = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (ValueError, RecursionError, yaml.YAMLError) as err:  # RecursionError: lists nested thousands deep
        raise UserError(f"--config {path}: not valid {kind} ({(str(err).splitlines() or [type(err).__name__])[0]})") from None
    if values is None:
        return {}
    if not isinstance(values, dict) or any(isinstance(v, dict) for v in values.values()):
        raise UserError(f"--config {path}: expected one flat mapping of config keys to values")
    return values


def resolve(
    config_cls: type,
    tier: dict,
    trial: dict | None = None,
    sets: list[str] = (),
    config_file: str | None = None,
    *,
    data_dir: str = "",
) -> Any:
    """Defaults, then the tier, the config file, a sampled trial, the data folder (``--data``; empty:
    not given), ``--set`` overrides; checked. Each layer's errors name it."""
    cfg = apply(check_class(config_cls)(), tier, "the tier")
    if config_file:
        cfg = apply(cfg, read_file(config_file), f"--config {config_file}")
    cfg = apply(cfg, trial or {}, "the trial")
    if data_dir:
        _check_data_dir(data_dir, "--data")
        cfg = apply(cfg, {"data_dir": data_dir}, "--data")
    return check(apply(cfg, parse_sets(list(sets)), "--set"))


def fit_to_data(cfg: Any, train_rows: int, workers: int) -> tuple[Any, str | None]:
    """``cfg`` long enough for ``min_steps`` optimizer steps on ``train_rows`` rows, and what changed.

    A tier says how long it trains in epochs of the data it was measured on; on a smaller set the
    same epochs are fewer steps, and training stops while the model is still learning (issue #18:
    ASL's fast tier on 558 real sequences). So epochs grow to ``ceil(min_steps / steps an epoch)``,
    and patience by the same factor: early stopping keeps the share of the run it may wait without
    improving, so it still ends a run that has converged. Called once the data is known, before the
    config is saved: a resumed run reads the grown values back.
    """
    from platform.train import exact

    if not cfg.min_steps or train_rows <= 0:
        return cfg, None
    steps = math.ceil(exact.step_count(train_rows, max(1, workers), cfg.batch_size) / cfg.grad_accum_steps)
    epochs = math.ceil(cfg.min_steps / steps)
    if epochs <= cfg.epochs:
        return cfg, None
    patience = math.ceil(cfg.patience * epochs / cfg.epochs)
    note = f"min_steps {cfg.min_steps}: {epochs} epochs of {steps} optimizer step{'s' * (steps > 1)} instead of {cfg.epochs}" + (
        f", patience {patience} instead of {cfg.patience}" if cfg.patience else ""
    )
    return dataclasses.replace(cfg, epochs=epochs, patience=patience), note


def as_yaml(cfg: Any) -> str:
    """``cfg`` as a config file (what ``--print-config`` shows), in field order."""
    import yaml

    values = {key: list(value) if isinstance(value, tuple) else value for key, value in to_dict(cfg).items()}
    return yaml.safe_dump(values, sort_keys=False, default_flow_style=None)


def limits(config_cls: type) -> dict[str, tuple[float | None, float | None]]:
    """Each limited field's inclusive (lowest, highest), None unbounded. Every class of the config's
    hierarchy that declares a field with limits bounds it: a subclass re-declaring a field for a new
    default keeps the base's limits, and limits of its own only narrow them (a trainable cannot let
    ``epochs=0`` through the platform's loop)."""
    merged: dict[str, tuple[float | None, float | None]] = {}
    for field in _declarations(config_cls):
        if LIMITS_KEY in field.metadata:
            merged[field.name] = _narrowest(merged.get(field.name, (None, None)), field.metadata[LIMITS_KEY])
    return merged


def _declarations(config_cls: type) -> list[dataclasses.Field]:
    """Every field as each dataclass of ``config_cls``'s hierarchy declares it, the base's first."""
    return [field for cls in reversed(config_cls.__mro__) if dataclasses.is_dataclass(cls) for field in dataclasses.fields(cls)]


def _narrowest(first: tuple, second: tuple) -> tuple[float | None, float | None]:
    lows, highs = [b for b in (first[0], second[0]) if b is not None], [b for b in (first[1], second[1]) if b is not None]
    return (max(lows) if lows else None, min(highs) if highs else None)


def key_groups(config_cls: type) -> dict[str, list[str]]:
    """The config's keys by owner, in field order: ``platform`` (``TrainConfig``'s, whatever default
    the trainable gives them), ``trainable`` (its own) and ``synthetic`` (its own that only shape its
    built-in synthetic set, marked ``limited(..., synthetic=True)``)."""
    platform_keys = {field.name for field in dataclasses.fields(TrainConfig)}
    synthetic = {field.name for field in _declarations(config_cls) if field.metadata.get(SYNTHETIC_KEY)}
    groups: dict[str, list[str]] = {"platform": [], "trainable": [], "synthetic": []}
    for field in dataclasses.fields(config_cls):
        owner = "platform" if field.name in platform_keys else "synthetic" if field.name in synthetic else "trainable"
        groups[owner].append(field.name)
    return groups


# Integers reach numpy, torch and Arrow, which hold 64 bits.
INT_RANGE = (-(2**63), 2**63 - 1)


def check(cfg: Any) -> Any:
    """Every number finite, in 64 bits and inside its limits (each item of a tuple field), the data
    folder a path; ``cfg`` itself when it is."""
    bounds = limits(type(cfg))
    for key, value in to_dict(cfg).items():
        each = " (each item)" if isinstance(value, tuple) else ""
        for item in value if each else (value,):
            _check_number(key, item, bounds.get(key, (None, None)), each)
    _check_data_dir(cfg.data_dir)
    cfg.validate()
    return cfg


def _check_number(key: str, value: Any, limit: tuple[float | None, float | None], each: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"config key {key!r} must be a finite number{each}, not {value}")
    if isinstance(value, int) and not INT_RANGE[0] <= value <= INT_RANGE[1]:
        raise UserError(f"config key {key!r} must fit in 64 bits{each}, not {value}")
    lowest, highest = limit
    if (lowest is not None and value < lowest) or (highest is not None and value > highest):
        shown = f">= {lowest}" if highest is None else f"<= {highest}" if lowest is None else f"in [{lowest}, {highest}]"
        raise UserError(f"config key {key!r} must be {shown}{each}, not {value}")


def _check_data_dir(data_dir: str, source: str = "config key 'data_dir'") -> None:
    if "\x00" in data_dir:
        raise UserError(f"{source} ({data_dir!r}) holds a NUL byte: no path does")
    try:
        Path(data_dir).expanduser()
    except RuntimeError as err:  # ~name of no user
        raise UserError(f"{source} ({data_dir!r}): {err}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(config_cls: type, values: dict[str, Any]) -> Any:
    return check(apply(config_cls(), values, "the saved config"))


def save(cfg: Any, path: Path) -> None:
    durable.write_text(path, json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n")
