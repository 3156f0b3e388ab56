"""What a sweep searches and for what: objectives, the search space, the time budget, estimates.

Used by ``python -m platform.tune asl --tiers smoke,fast --trials 8 --objective val/acc:max``
(and ``--pareto val/acc:max,train_s:min``, ``--time-budget 30m``, ``--dry-run``). Everything here is
checked before Ray starts, so a bad metric, space, tier or budget costs one line and no compute.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from platform import config as config_lib
from platform.contract import SearchSpace, Trainable
from platform.errors import UserError
from platform.tune.distributions import to_tune

# Added to what the trainable reports by the sweep (platform/tune/trial.py).
SWEEP_METRICS = {"train_s": "min", "params": "min"}
# Reported by every trainable through platform/train/worker.py.
WORKER_METRICS = {"epoch_s": "min"}
# Starting a one-worker Ray Train run costs 15-20 s on a 2-core machine (a bare TorchTrainer.fit: 17-20 s).
TRIAL_STARTUP_S = 20.0
# When neither the search space (EPOCH_SECONDS) nor an earlier run says how long an epoch takes.
ASSUMED_EPOCH_S = 5.0
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


@dataclasses.dataclass(frozen=True)
class Objective:
    metric: str
    mode: str  # "min" or "max"

    def __str__(self) -> str:
        return f"{self.metric}:{self.mode}"


def parse_objectives(text: str, trainable: Trainable, flag: str) -> list[Objective]:
    """``val/acc:max,train_s:min`` -> objectives; the mode may be left out where it is known."""
    objectives = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        metric, _, mode = item.rpartition(":") if ":" in item else (item, "", "")
        mode = mode or default_mode(metric, trainable)
        if mode not in ("min", "max"):
            raise UserError(f"{flag}: mode of {metric!r} must be min or max, got {mode!r}")
        check_metric(metric, trainable)
        objectives.append(Objective(metric, mode))
    if not objectives:
        raise UserError(f"{flag} names no metric")
    if len({o.metric for o in objectives}) != len(objectives):
        raise UserError(f"{flag} names a metric twice")
    return objectives


def default_mode(metric: str, trainable: Trainable) -> str:
    name, mode = trainable.METRIC
    if metric == name:
        return mode
    known = {**SWEEP_METRICS, **WORKER_METRICS}
    if metric in known or metric.endswith("loss"):
        return known.get(metric, "min")
    raise UserError(f"say whether {metric!r} is minimised or maximised: {metric}:min or {metric}:max")


def check_metric(metric: str, trainable: Trainable) -> None:
    """Only what a trial reports: the trainable's metrics (``val/*``, ``train/*``) and the sweep's.

    A ``val/x`` the trainable turns out not to report is caught on the first result
    (``platform/tune/results.py``); this check catches typos before anything runs.
    """
    known = [trainable.METRIC[0], "val/loss", "train/loss", *SWEEP_METRICS, *WORKER_METRICS]
    if metric in known or re.fullmatch(r"(val|train)/[A-Za-z0-9_.-]+", metric):
        return
    raise UserError(f"unknown metric {metric!r}; a trial reports {', '.join(known)} and other val/*, train/* metrics")


# ---------------------------------------------------------------- the search space


def searched_space(search: SearchSpace, config_cls: type, sets: list[str]) -> Any:
    """``SPACE`` checked against the Config: a dict of distributions (``platform/tune/distributions.py``
    or ``ray.tune``'s), or a function.

    Keys fixed by ``--set`` are dropped: ``--set`` wins over a trial, so searching them is waste.
    """
    space = search.SPACE
    if callable(space):
        return space  # conditional (define-by-run): checked when Optuna first calls it
    if not isinstance(space, dict):
        raise UserError(f"{search.name}.SPACE must be a dict of distributions or a function")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(space) - fields)
    if unknown:
        raise UserError(f"{search.name}.SPACE: unknown config key {unknown[0]!r}")
    fixed = set(config_lib.parse_sets(list(sets)))
    kept = {key: to_tune(value) for key, value in space.items() if key not in fixed}
    try:
        converted = OptunaSearch.convert_search_space(kept)
    except (ValueError, AttributeError, TypeError) as err:
        raise UserError(f"{search.name}.SPACE is malformed: {err}") from None
    if set(converted) != set(kept):
        missing = sorted(set(kept) - set(converted))
        raise UserError(f"{search.name}.SPACE is malformed: {missing[0]!r} is not a distribution")
    return converted


# Marks, in a trial's config, the trial that trains its tier's own configuration (no sampled values).
TIER_DEFAULT = "tier_default"


class DefineByRun:
    """Optuna's define-by-run space: the tier first, then the hyperparameters.

    Define-by-run because a space may be conditional on the tier. A module-level class, not a
    closure: Tune pickles the searcher (with its space) into the sweep for ``--resume``.

    The first trials are the tiers' own configurations, one a tier (``defaults``, from
    :func:`tier_default_points`): Ray's ``points_to_evaluate`` enqueues them in Optuna's study,
    which hands them out first, as trials 0..n-1, with their values fixed. Such a trial suggests
    only the keys its point holds (the tier's values inside the space), so Optuna learns from them,
    and it is marked ``tier_default``: it trains the tier exactly, whatever the space.
    """

    defaults: tuple = ()  # what a sweep pickled before tiers' own configurations were trials resumes with

    def __init__(self, tiers: list[str], space: Any, defaults: list[dict] | None = None):
        self.tiers = tiers
        self.space = space
        self.defaults = list(defaults or [])

    def __call__(self, trial: Any) -> dict | None:
        if trial.number < len(self.defaults):
            return self._tier_default(trial, self.defaults[trial.number])
        tier = trial.suggest_categorical("tier", self.tiers) if len(self.tiers) > 1 else self.tiers[0]
        if callable(self.space):
            takes_tier = len(inspect.signature(self.space).parameters) > 1
            extra = self.space(trial, tier) if takes_tier else self.space(trial)
        else:
            extra = None
            for name, distribution in self.space.items():
                suggest(trial, name, distribution)
        return {"tier": tier, **(extra or {})}

    def _tier_default(self, trial: Any, point: dict) -> dict:
        tier = trial.suggest_categorical("tier", self.tiers) if len(self.tiers) > 1 else point["tier"]
        if not callable(self.space):
            for name in (key for key in self.space if key in point):
                suggest(trial, name, self.space[name])  # fixed by the enqueued point: the tier's value
        return {"tier": tier, TIER_DEFAULT: True}


def tier_default_points(tiers: list[str], space: Any, tier_configs: dict[str, Any]) -> list[dict]:
    """Each tier's own configuration as a point for Optuna: the tier and its values of the space's keys.

    A value outside the space (``dim=32`` of the smoke tier when the space chooses 64-192) is left
    out: Optuna cannot record it, and the trial trains the tier's value anyway. A conditional space
    (a function) gives the tier alone.
    """
    points = []
    for tier in tiers:
        values = config_lib.to_dict(tier_configs[tier])
        inside = (
            {} if callable(space) else {name: values[name] for name, distribution in space.items() if contains(distribution, values[name])}
        )
        points.append({"tier": tier, **inside})
    return points


def contains(distribution: Any, value: Any) -> bool:
    """Whether Optuna's ``distribution`` can hold ``value`` (on its step, for a stepped one)."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return any(type(value) is type(choice) and value == choice for choice in distribution.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not distribution.low <= value <= distribution.high:
        return False
    if isinstance(distribution, optuna.distributions.IntDistribution) and not float(value).is_integer():
        return False
    step = distribution.step
    return not step or math.isclose((value - distribution.low) / step, round((value - distribution.low) / step), abs_tol=1e-9)


def suggest(trial: Any, name: str, distribution: Any) -> Any:
    if isinstance(distribution, optuna.distributions.FloatDistribution):
        return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    return trial.suggest_categorical(name, distribution.choices)


def describe_space(tiers: list[str], space: Any) -> list[str]:
    lines = [f"  tier: {' | '.join(tiers)}"]
    if callable(space):
        return [*lines, f"  (conditional space: {getattr(space, '__qualname__', space)})"]
    for name, dist in space.items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            lines.append(f"  {name}: choice {list(dist.choices)}")
        else:
            kind = "log-uniform" if dist.log else "uniform"
            kind = f"{'integer ' if isinstance(dist, optuna.distributions.IntDistribution) else ''}{kind}"
            lines.append(f"  {name}: {kind} [{dist.low:g}, {dist.high:g}]" + (f" step {dist.step:g}" if dist.step else ""))
    return lines


# ---------------------------------------------------------------- time


def parse_duration(text: str | None) -> float | None:
    """``30m``, ``1h30m``, ``90s``, ``90`` -> seconds."""
    if not text:
        return None
    match = _DURATION.match(text.strip().lower())
    if not match or not any(match.groups()):
        raise UserError(f"--time-budget expects a duration like 30m, 1h30m or 90s, got {text!r}")
    hours, minutes, seconds = (float(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def epoch_seconds(trainable: Trainable, storage: Path, tier: str) -> tuple[float, str]:
    """Seconds an epoch of ``tier``: measured by earlier runs and trials in ``storage`` when there
    are some, else the search space's ``EPOCH_SECONDS``, else an assumption."""
    measured = []
    patterns = ["*/manifest.json", "sweeps/*/trials/*/manifest.json"]
    for manifest_path in (p for pattern in patterns for p in (storage / trainable.stem).glob(pattern)):
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if manifest.get("tier") == tier:
            measured += [row["epoch_s"] for row in manifest.get("history", []) if "epoch_s" in row]
    if measured:
        return statistics.median(measured), f"measured over {len(measured)} earlier epochs"
    declared = trainable.space.EPOCH_SECONDS
    if tier in declared:
        return float(declared[tier]), "from the search space"
    return ASSUMED_EPOCH_S, "assumed"


def trial_seconds(epochs: int, seconds_per_epoch: float) -> float:
    return TRIAL_STARTUP_S + epochs * seconds_per_epoch
