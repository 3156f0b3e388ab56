"""Search-space distributions as data, importable without Ray (``--help`` reads a search space's tiers).

A search space writes ``SPACE = {"lr": loguniform(1e-4, 3e-3), "dim": choice([64, 128])}``;
``python -m platform.tune asl`` turns each into the ``ray.tune`` distribution of the same name
(``platform/tune/space.py``), which it also accepts as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Distribution:
    """``ray.tune.<name>(*args)``, built when a sweep needs it."""

    name: str
    args: tuple

    def to_tune(self) -> Any:
        from ray import tune

        return getattr(tune, self.name)(*self.args)


def uniform(lower: float, upper: float) -> Distribution:
    return Distribution("uniform", (lower, upper))


def loguniform(lower: float, upper: float) -> Distribution:
    return Distribution("loguniform", (lower, upper))


def randint(lower: int, upper: int) -> Distribution:
    """An integer from lower to upper - 1, as ``ray.tune.randint``."""
    return Distribution("randint", (lower, upper))


def choice(categories: Iterable[Any]) -> Distribution:
    return Distribution("choice", (list(categories),))


def to_tune(value: Any) -> Any:
    """A ``Distribution`` as Ray Tune's; anything else (a ``ray.tune`` domain already) unchanged."""
    return value.to_tune() if isinstance(value, Distribution) else value
