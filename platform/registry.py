"""The module name is the registry: ``asl`` is ``trainables/asl.py`` with ``search_spaces/asl.py``.

Used by every command that takes a stem, e.g. ``python -m platform.run asl --tier fast``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from platform import config as config_lib
from platform import contract
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
    """The trainable module and its search-space module, checked against the contract
    (``platform/contract.py``); an unknown stem names the known ones."""
    if stem not in stems():
        raise UserError(f"unknown trainable {stem!r}; known: {', '.join(stems()) or 'none'}")
    trainable, space = importlib.import_module(f"trainables.{stem}"), importlib.import_module(f"search_spaces.{stem}")
    contract.check(trainable, space)
    return trainable, space


def saved_tier_path(storage: Path, stem: str, tier: str) -> Path:
    """Where a sweep saves a tier (``python -m platform.tune``): ``<storage>/<stem>/tiers/<tier>.json``,
    holding ``{"base": <tier>, "overrides": {...}}`` plus where it came from."""
    return storage / stem / "tiers" / f"{tier}.json"


def tier_names(space: ModuleType, storage: Path | None = None) -> list[str]:
    saved = sorted(p.stem for p in saved_tier_path(storage, _stem(space), "*").parent.glob("*.json")) if storage else []
    return list(space.TIERS) + sorted(getattr(space, "ALIASES", {})) + saved


def _stem(space: ModuleType) -> str:
    return space.__name__.split(".")[-1]


def tier_overrides(space: ModuleType, tier: str, storage: Path | None = None) -> dict[str, Any]:
    """A tier's config overrides: a preset (the seeds' own mode names are aliases) or a saved tier."""
    name = getattr(space, "ALIASES", {}).get(tier, tier)
    if name in space.TIERS:
        return dict(space.TIERS[name])
    saved = saved_tier_path(storage, _stem(space), tier) if storage else None
    if saved is not None and saved.is_file():
        try:
            tier_file = json.loads(saved.read_text(encoding="utf-8"))
            return {**tier_overrides(space, tier_file["base"]), **tier_file["overrides"]}
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"saved tier {saved} is malformed ({err})") from None
    known = ", ".join(tier_names(space, storage))
    raise UserError(f"unknown tier {tier!r} for {_stem(space)}; known: {known}")


def resolve(
    stem: str, tier: str, sets: list[str] = (), trial: dict | None = None, data_dir: str = "",
    storage: Path | None = None, config_file: str | None = None,
) -> Any:
    """The config of a run: defaults, tier, ``--config``, trial, ``--data``, ``--set``."""
    trainable, space = load(stem)
    given = [f"data_dir={data_dir}"] if data_dir else []
    return config_lib.resolve(trainable.Config, tier_overrides(space, tier, storage), trial, given + list(sets),
                              config_file)
