"""The module name is the registry: ``asl`` is ``trainables/asl.py`` with ``search_spaces/asl.py``.

Used by every command that takes a stem, e.g. ``python -m platform.run asl --tier fast``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from platform import config as config_lib
from platform.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TIER = "fast"


def _module_names(folder: Path) -> set[str]:
    """Modules (``x.py``) and packages (``x/__init__.py``) directly in ``folder``."""
    files = {p.stem for p in folder.glob("*.py")}
    packages = {p.parent.name for p in folder.glob("*/__init__.py")}
    return {name for name in files | packages if not name.startswith("_")}


def stems() -> list[str]:
    """Every trainable: a module in ``trainables/`` with a search space of the same stem."""
    return sorted(_module_names(REPO_ROOT / "trainables") & _module_names(REPO_ROOT / "search_spaces"))


def load(stem: str) -> tuple[ModuleType, ModuleType]:
    """The trainable module and its search-space module; an unknown stem names the known ones."""
    if stem not in stems():
        raise UserError(f"unknown trainable {stem!r}; known: {', '.join(stems()) or 'none'}")
    return importlib.import_module(f"trainables.{stem}"), importlib.import_module(f"search_spaces.{stem}")


def tier_names(space: ModuleType) -> list[str]:
    return list(space.TIERS) + sorted(getattr(space, "ALIASES", {}))


def tier_overrides(space: ModuleType, tier: str) -> dict[str, Any]:
    """A tier's config overrides; the seeds' own mode names are aliases of the platform's tiers."""
    name = getattr(space, "ALIASES", {}).get(tier, tier)
    if name not in space.TIERS:
        stem = space.__name__.split(".")[-1]
        raise UserError(f"unknown tier {tier!r} for {stem}; known: {', '.join(tier_names(space))}")
    return dict(space.TIERS[name])


def resolve(stem: str, tier: str, sets: list[str] = (), trial: dict | None = None, data_dir: str = "") -> Any:
    """The config of a run: defaults, tier, trial, ``--data``, ``--set``."""
    trainable, space = load(stem)
    overrides = tier_overrides(space, tier)
    if data_dir:
        overrides["data_dir"] = data_dir
    return config_lib.resolve(trainable.Config, overrides, trial, list(sets))
