"""Where trainables come from: a name on the command line to the trainable's code, its config and
its tiers; and the tiers a sweep saved.

Used by every command that takes a trainable, e.g. ``python -m platform.run asl --tier fast`` or
``rayplatform run ./mytoy --tier smoke``. A trainable is named in one of four ways, tried in turn:

- a built-in stem: ``asl`` is ``trainables/asl/``, with its tiers in ``search_spaces/asl.py``;
- a folder: ``./mytoy`` (a path, or a folder here) is the package in it, imported as ``mytoy``;
- an installed plugin: a name a distribution registers under the entry-point group
  ``rayplatform.trainables`` (``toy = "mypkg.mytoy"``);
- a module importable here: ``mypkg.mytoy``.

A trainable of the user's is a package whose tiers and search space travel with it, in
``space.py`` beside its ``__init__.py`` (``trainables/__init__.py`` gives the whole contract). Once
found it goes by its stem (the folder's name, the plugin's name, the module's dotted name): runs are
filed under ``<storage>/<stem>/``, and Ray's processes load it by its stem through the job's runtime
env, which ships its package (``platform/cluster.py``). A run's manifest records the stem and, for a
folder, the folder's absolute path (``reference``): what ``predict``, the notebook API and the
monitor find it again by.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from platform import config as config_lib
from platform import contract
from platform.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TIER = "fast"
PLUGIN_GROUP = "rayplatform.trainables"
SPACE_FILE, CONFIG_FILE = "space.py", "config.py"
# The user's trainables a driver found, for the Ray processes of its job: {stem: [module, reference]}.
JOB_ENV = "RAYPLATFORM_TRAINABLES"


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a trainable's code is, as :func:`find` found it."""

    stem: str
    """Its name in runs (``<storage>/<stem>/``), stores, and Ray's processes."""
    module: str
    """Its package's import name."""
    reference: str
    """What finds it again from a run's manifest: the stem, or a folder's absolute path."""
    folder: Path
    """The package's folder: ``config.py`` (read alone, without torch) and, for the user's, ``space.py``."""
    space_module: str
    space_path: Path
    shipped: Path | None = None
    """The folder of its top-level package, which Ray's processes get with the job (None: built in)."""
    by_file: bool = False
    """Imported from its folder's files (a folder named by its path), not by its name."""


# Every trainable this process found, by stem: a stem names the same code everywhere in a process.
_FOUND: dict[str, Source] = {}


def _module_names(folder: Path) -> set[str]:
    """Modules (``x.py``) and packages (``x/__init__.py``) directly in ``folder``."""
    files = {p.stem for p in folder.glob("*.py")}
    packages = {p.parent.name for p in folder.glob("*/__init__.py")}
    return {name for name in files | packages if not name.startswith("_")}


def stems() -> list[str]:
    """The built-in trainables: a module in ``trainables/`` with a search space of the same stem."""
    return sorted(_module_names(REPO_ROOT / "trainables") & _module_names(REPO_ROOT / "search_spaces"))


def plugins() -> dict[str, str]:
    """Installed plugins: name -> the module it registers under ``rayplatform.trainables``."""
    return {entry.name: entry.value for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP)}


def find(name: str) -> Source:
    """The trainable ``name`` names (the module docstring's four ways); an unknown name lists them."""
    # A plugin before a folder of its name here: a run of the plugin records its name alone.
    source = _FOUND.get(name) or _from_job(name) or _built_in(name) or _from_plugin(name) or _from_folder(name) or _from_module(name)
    if source is None:
        listed = ", ".join(stems()) + "".join(f", {plugin} (plugin)" for plugin in plugins())
        raise UserError(
            f"unknown trainable {name!r}; known: {listed}; or a trainable package of your own: a folder (./mytoy) "
            "or an importable module (mypkg.mytoy), which `rayplatform new NAME` starts"
        )
    known = _FOUND.setdefault(source.stem, source)
    if known.reference != source.reference:
        raise UserError(f"two trainables named {source.stem} in one process ({known.reference} and {source.reference}): rename one")
    return source


# A module this registry is importing is in ``sys.modules`` before its code has run: another thread
# (a notebook's, a test's) that found it there would take it half made. One import at a time.
_IMPORTING = threading.RLock()


def load(name: str) -> contract.Trainable:
    """The trainable and its search space, checked against the contract (``platform/contract.py``)."""
    with _IMPORTING:
        return _load(name)


def _load(name: str) -> contract.Trainable:
    source = find(name)
    with _imported(source):
        package, space = _package(source), _space(source)
    try:
        contract.check(package, space)
    except UserError:
        _forget(source)  # a notebook that fixes the file imports it again
        raise
    return contract.Trainable.of(source.stem, package, space, source.reference)


@contextlib.contextmanager
def _imported(source: Source) -> Iterator[None]:
    """Importing a trainable of the user's: an error in its code is one line naming its file (with
    its line), and its modules are forgotten, so that a notebook imports the file again once fixed."""
    try:
        yield
    except BaseException as err:
        _forget(source)
        if source.shipped is None or isinstance(err, UserError) or not isinstance(err, Exception):
            raise
        said = err.msg if isinstance(err, SyntaxError) else err  # its str() repeats the file and line
        raise UserError(f"trainable {source.stem} cannot be imported: {_where(err)}: {type(err).__name__}: {said}") from err


def _forget(source: Source) -> None:
    """Drop a trainable of the user's modules from this process, to be imported anew."""
    if source.shipped is not None:
        for module in [name for name in sys.modules if name == source.module or name.startswith(source.module + ".")]:
            del sys.modules[module]


def _where(err: Exception) -> str:
    """The file and line of the user's code that failed: a syntax error's own, else the innermost frame."""
    if isinstance(err, SyntaxError) and err.filename:
        return f"{err.filename}:{err.lineno}"
    frame = traceback.extract_tb(err.__traceback__)[-1]
    return f"{frame.filename}:{frame.lineno}"


def load_config(name: str) -> tuple[type, contract.SearchSpace]:
    """The trainable's ``Config`` and its search space, without its model code: from its
    ``config.py`` when it has one (what ``--help`` and ``--print-config`` read, with no torch to
    import), else from the trainable itself."""
    with _IMPORTING:
        return _load_config(name)


def _load_config(name: str) -> tuple[type, contract.SearchSpace]:
    source = find(name)
    config_name, config_path = f"{source.module}.config", source.folder / CONFIG_FILE
    with _imported(source):
        if config_name not in sys.modules and source.module not in sys.modules and config_path.is_file():
            _import_alone(config_name, config_path)
        module = sys.modules.get(config_name) or _package(source)
        if not isinstance(vars(module).get("Config"), type):
            raise UserError(f"trainable {contract.shown(module)} does not define Config (see trainables/__init__.py)")
        space = _space(source)
    try:
        return module.Config, contract.SearchSpace.of(space, source.stem)
    except UserError:
        _forget(source)
        raise


def found_outside() -> list[Source]:
    """The trainables of the user's this process found: what its Ray job must ship."""
    return [source for source in _FOUND.values() if source.shipped is not None]


def job_table(sources: list[Source]) -> str:
    """``JOB_ENV``'s value: how Ray's processes find these trainables by stem."""
    return json.dumps({source.stem: [source.module, source.reference] for source in sources}, sort_keys=True)


def recorded(manifest: dict) -> str:
    """The trainable of a run, as :func:`load` takes it, from its manifest: its reference (older runs
    record only their stem). A folder moved or gone since (a job's working dir is a temporary
    copy) is looked for by its stem, here, with a warning."""
    stem = manifest["stem"]
    reference = manifest.get("trainable") or stem
    if reference != stem and not Path(reference).is_dir():
        print(f"warning: the run's trainable folder {reference} is gone; looking for {stem} from here", file=sys.stderr)
        return stem
    return reference


def _from_job(name: str) -> Source | None:
    """In a Ray process: a trainable of the user's that the driver found (``JOB_ENV``)."""
    entry = json.loads(os.environ.get(JOB_ENV) or "{}").get(name)
    return _from_module(entry[0], stem=name, reference=entry[1]) if entry else None


def _built_in(name: str) -> Source | None:
    if name not in stems():
        return None
    space_module = f"search_spaces.{name}"
    return Source(
        name, f"trainables.{name}", name, REPO_ROOT / "trainables" / name, space_module, REPO_ROOT / "search_spaces" / f"{name}.py"
    )


def _from_folder(name: str) -> Source | None:
    try:
        path = Path(name).expanduser()
        is_folder = path.is_dir()
    except (RuntimeError, OSError):  # ~nosuchuser, a name too long for the file system
        path, is_folder = None, False
    if not is_folder:
        if "/" in name or os.sep in name or name.startswith((".", "~")):
            raise UserError(f"trainable folder not found: {name}")
        return None
    folder, module = path.resolve(), path.resolve().name
    if not (folder / "__init__.py").is_file():
        raise UserError(f"{name} is no trainable package: it has no __init__.py (`rayplatform new NAME` writes one to start from)")
    if not module.isidentifier():
        raise UserError(f"trainable folder {name}: its name {module!r} is imported as a module, so it must be letters, digits and _")
    if module in stems() or module in plugins():
        kind = "built-in trainable" if module in stems() else "installed plugin trainable"
        raise UserError(f"trainable folder {name} is named like the {kind} {module}: rename the folder")
    taken = _taken_by(module, folder / "__init__.py")
    if taken:
        raise UserError(f"trainable folder {name} is named {module}, like the module {module} ({taken}) it would hide: rename the folder")
    return _of_user(module, module, str(folder), folder, shipped=folder, by_file=True)


def _taken_by(module: str, init: Path) -> str | None:
    """Where ``module`` comes from, if a package of that name other than ``init`` is importable here
    (it would hide the folder, or the folder it)."""
    loaded = sys.modules.get(module)
    spec = loaded.__spec__ if loaded is not None else importlib.util.find_spec(module)
    if spec is None or spec.origin is None:  # nothing, or a namespace package, which a package hides
        return None if loaded is None else "imported"
    return None if Path(spec.origin).resolve() == init else spec.origin


def _from_plugin(name: str) -> Source | None:
    module = plugins().get(name)
    if module is None:
        return None
    source = _from_module(module, stem=name, reference=name) if _is_dotted(module) else None
    if source is None:
        raise UserError(f"plugin trainable {name} ({PLUGIN_GROUP}) names {module!r}, which is no importable package")
    return source


def _from_module(name: str, stem: str | None = None, reference: str | None = None) -> Source | None:
    if not _is_dotted(name):
        return None
    try:
        spec = importlib.util.find_spec(name)  # imports its parent packages, not the module itself
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):  # a parent is missing, not one of its imports
            return None
        raise
    if spec is None:
        return None
    if spec.submodule_search_locations is None:
        raise UserError(
            f"{name} ({spec.origin}) is a module: a trainable is a package, with its tiers in {SPACE_FILE} beside its __init__.py"
        )
    folder = Path(next(iter(spec.submodule_search_locations))).resolve()
    depth = name.count(".")
    top = folder.parents[depth - 1] if depth else folder
    return _of_user(stem or name, name, reference or stem or name, folder, shipped=top)


def _is_dotted(name: str) -> bool:
    return all(part.isidentifier() for part in name.split("."))


def _of_user(stem: str, module: str, reference: str, folder: Path, *, shipped: Path, by_file: bool = False) -> Source:
    space_path = folder / SPACE_FILE
    if not space_path.is_file():
        raise UserError(
            f"trainable {stem} ({folder}) has no {SPACE_FILE} beside its __init__.py: its TIERS and SPACE (see trainables/__init__.py)"
        )
    return Source(stem, module, reference, folder, f"{module}.space", space_path, shipped, by_file)


def _package(source: Source) -> Any:
    if source.module in sys.modules:
        return sys.modules[source.module]
    if source.by_file:
        return _import_alone(source.module, source.folder / "__init__.py", package=source.folder)
    return importlib.import_module(source.module)


def _space(source: Source) -> Any:
    """The search space; a user's ``space.py`` is read alone, without its package's torch."""
    if source.shipped is None or source.space_module in sys.modules or source.module in sys.modules:
        return importlib.import_module(source.space_module)
    return _import_alone(source.space_module, source.space_path)


def _import_alone(name: str, path: Path, package: Path | None = None) -> Any:
    """Import ``path`` as module ``name`` (a package's ``__init__.py`` when ``package`` is its
    folder) without importing its parent package: the parent, when imported later, finds it in
    ``sys.modules`` (one ``Config`` class either way)."""
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=[str(package)] if package else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def saved_tier_path(storage: Path, stem: str, tier: str) -> Path:
    """Where a sweep saves a tier (``python -m platform.tune``): ``<storage>/<stem>/tiers/<tier>.json``,
    holding ``{"base": <preset tier>, "overrides": {...}}`` plus where it came from."""
    return storage / stem / "tiers" / f"{tier}.json"


def tier_names(space: contract.SearchSpace, storage: Path | None = None) -> list[str]:
    """Presets, aliases and the saved tiers that resolve (``broken_tiers`` holds the others)."""
    broken = broken_tiers(space, storage)
    return list(space.TIERS) + sorted(space.ALIASES) + [name for name in _saved_names(space, storage) if name not in broken]


def broken_tiers(space: contract.SearchSpace, storage: Path | None = None) -> dict[str, str]:
    """Saved tier files that do not resolve, each with the line saying why: listed apart, so one bad
    file never breaks ``--help`` or the other tiers."""
    broken = {}
    for name in _saved_names(space, storage):
        try:
            saved_tier_base(space, name, storage)
        except UserError as err:
            broken[name] = str(err)
    return broken


def _saved_names(space: contract.SearchSpace, storage: Path | None) -> list[str]:
    found = saved_tier_path(storage, space.stem, "*").parent.glob("*.json") if storage else []
    return sorted(path.stem for path in found if is_tier_name(path.stem) and path.is_file())  # not a dangling link, nor a folder


def saved_tier_base(space: contract.SearchSpace, tier: str, storage: Path | None) -> tuple[str, dict[str, Any]]:
    """A tier as a preset (or alias) and the overrides its chain of saved tiers puts on it, a later
    file's winning; a loop or a base that is no tier is an error naming the file."""
    presets = set(space.TIERS) | set(space.ALIASES)
    chain: list[str] = []
    overrides: dict[str, Any] = {}
    name = tier
    while name not in presets:
        path = saved_tier_path(storage, space.stem, name) if storage and is_tier_name(name) else None
        if (path is None or not path.is_file()) and chain:
            named_by = saved_tier_path(storage, space.stem, chain[-1])
            raise UserError(f"saved tier {named_by} has base tier {name!r}, which is no tier of {space.stem}")
        if path is None or not path.is_file():
            raise UserError(f"unknown tier {tier!r} for {space.stem}; known: {', '.join(tier_names(space, storage))}")
        if name in chain:
            asked = saved_tier_path(storage, space.stem, tier)
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


def tier_overrides(space: contract.SearchSpace, tier: str, storage: Path | None = None) -> dict[str, Any]:
    """A tier's config overrides: a preset (the seeds' own mode names are aliases) or a saved tier."""
    base, overrides = saved_tier_base(space, tier, storage)
    return {**space.TIERS[space.ALIASES.get(base, base)], **overrides}


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
    """The config of a run: defaults, tier, ``--config``, trial, ``--data``, ``--set`` (``config.resolve``)."""
    config_cls, space = load_config(stem)
    return config_lib.resolve(config_cls, tier_overrides(space, tier, storage), trial, sets, config_file, data_dir=data_dir)
