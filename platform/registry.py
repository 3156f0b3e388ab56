"""The module name is the registry: ``asl`` is ``trainables/asl/`` with ``search_spaces/asl.py``.

Used by every command that takes a stem, e.g. ``python -m platform.run asl --tier fast``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
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


def load(stem: str) -> contract.Trainable:
    """The trainable and its search space, checked against the contract (``platform/contract.py``);
    an unknown stem names the known ones."""
    _check_known(stem)
    package, space = importlib.import_module(f"trainables.{stem}"), importlib.import_module(f"search_spaces.{stem}")
    contract.check(package, space)
    return contract.Trainable(stem, package, space)


def load_config(stem: str) -> tuple[type, ModuleType]:
    """The trainable's ``Config`` and its search space, without its model code: from
    ``trainables/<stem>/config.py`` when it has one (what ``--help`` and ``--print-config`` read,
    with no torch to import), else from the trainable itself."""
    _check_known(stem)
    name, path = f"trainables.{stem}.config", REPO_ROOT / "trainables" / stem / "config.py"
    if name not in sys.modules and f"trainables.{stem}" not in sys.modules and path.is_file():
        _import_alone(name, path)
    module = sys.modules.get(name) or importlib.import_module(f"trainables.{stem}")
    return module.Config, importlib.import_module(f"search_spaces.{stem}")


def _import_alone(name: str, path: Path) -> None:
    """Import ``path`` as module ``name`` without its package's ``__init__``; the package, when
    imported later, finds it in ``sys.modules`` (one ``Config`` class either way)."""
    importlib.import_module(name.split(".")[0])
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _check_known(stem: str) -> None:
    if stem not in stems():
        raise UserError(f"unknown trainable {stem!r}; known: {', '.join(stems()) or 'none'}")


def saved_tier_path(storage: Path, stem: str, tier: str) -> Path:
    """Where a sweep saves a tier (``python -m platform.tune``): ``<storage>/<stem>/tiers/<tier>.json``,
    holding ``{"base": <preset tier>, "overrides": {...}}`` plus where it came from."""
    return storage / stem / "tiers" / f"{tier}.json"


def tier_names(space: ModuleType, storage: Path | None = None) -> list[str]:
    """Presets, aliases and the saved tiers that resolve (``broken_tiers`` holds the others)."""
    broken = broken_tiers(space, storage)
    return list(space.TIERS) + sorted(getattr(space, "ALIASES", {})) + [name for name in _saved_names(space, storage) if name not in broken]


def broken_tiers(space: ModuleType, storage: Path | None = None) -> dict[str, str]:
    """Saved tier files that do not resolve, each with the line saying why: listed apart, so one bad
    file never breaks ``--help`` or the other tiers."""
    broken = {}
    for name in _saved_names(space, storage):
        try:
            saved_tier_base(space, name, storage)
        except UserError as err:
            broken[name] = str(err)
    return broken


def _saved_names(space: ModuleType, storage: Path | None) -> list[str]:
    found = saved_tier_path(storage, _stem(space), "*").parent.glob("*.json") if storage else []
    return sorted(path.stem for path in found if is_tier_name(path.stem) and path.is_file())  # not a dangling link, nor a folder


def _stem(space: ModuleType) -> str:
    return space.__name__.split(".")[-1]


def saved_tier_base(space: ModuleType, tier: str, storage: Path | None) -> tuple[str, dict[str, Any]]:
    """A tier as a preset (or alias) and the overrides its chain of saved tiers puts on it, a later
    file's winning; a loop or a base that is no tier is an error naming the file."""
    presets = set(space.TIERS) | set(getattr(space, "ALIASES", {}))
    chain: list[str] = []
    overrides: dict[str, Any] = {}
    name = tier
    while name not in presets:
        path = saved_tier_path(storage, _stem(space), name) if storage and is_tier_name(name) else None
        if (path is None or not path.is_file()) and chain:
            named_by = saved_tier_path(storage, _stem(space), chain[-1])
            raise UserError(f"saved tier {named_by} has base tier {name!r}, which is no tier of {_stem(space)}")
        if path is None or not path.is_file():
            raise UserError(f"unknown tier {tier!r} for {_stem(space)}; known: {', '.join(tier_names(space, storage))}")
        if name in chain:
            asked = saved_tier_path(storage, _stem(space), tier)
            raise UserError(f"saved tier {asked} has base tiers in a loop: {' -> '.join([*chain, name])}")
        chain.append(name)
        name, own = _read_saved(path)
        overrides = {**own, **overrides}
    return name, overrides


def is_tier_name(name: str) -> bool:
    """A saved tier's name is a file name in ``tiers/``, never a path out of it."""
    return bool(name) and not re.search(r"[/\\\x00]", name) and not name.startswith(".")


def _read_saved(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        tier_file = json.loads(path.read_text(encoding="utf-8"))
        base, overrides = tier_file["base"], tier_file["overrides"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"saved tier {path} is malformed ({err})") from None
    if not isinstance(base, str) or not isinstance(overrides, dict):
        raise UserError(f"saved tier {path} is malformed (base must be a tier name, overrides a mapping)")
    return base, overrides


def tier_overrides(space: ModuleType, tier: str, storage: Path | None = None) -> dict[str, Any]:
    """A tier's config overrides: a preset (the seeds' own mode names are aliases) or a saved tier."""
    base, overrides = saved_tier_base(space, tier, storage)
    return {**space.TIERS[getattr(space, "ALIASES", {}).get(base, base)], **overrides}


def resolve(
    stem: str,
    tier: str,
    sets: list[str] = (),
    *,
    trial: dict | None = None,
    data_dir: str = "",
    storage: Path | None = None,
    config_file: str | None = None,
) -> Any:
    """The config of a run: defaults, tier, ``--config``, trial, ``--data``, ``--set``."""
    config_cls, space = load_config(stem)
    given = [f"data_dir={data_dir}"] if data_dir else []
    return config_lib.resolve(config_cls, tier_overrides(space, tier, storage), trial, given + list(sets), config_file)
