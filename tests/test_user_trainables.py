"""Trainables of the user's (``platform/registry.py``): the four ways a name finds one, a misspelt
hook named in the user's own file whichever way it came, the refusals of names and code that cannot
work, a run finding its trainable again (and resuming with no other), and a store key that covers
the trainable's code. No Ray: ``tests/test_new_trainable.py`` trains one.

    .venv/bin/python -m pytest tests/test_user_trainables.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from platform import config as config_lib
from platform import registry
from platform.data import ingest
from platform.errors import UserError
from platform.launching import Launch
from platform.runs import run_files
from platform.runs.opening import Request, open_run
from rayplatform import new

PLUGIN = "[rayplatform.trainables]\ntoy = userpkg.toy\n"


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Each test finds trainables as a new process would; the packages it imported are forgotten."""
    monkeypatch.setattr(registry, "_FOUND", {}, raising=False)
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("mytoy", "userpkg"):
            del sys.modules[name]


@pytest.fixture
def layouts(tmp_path, monkeypatch) -> dict[str, Path]:
    """``rayplatform new``'s package three ways: a folder here (``./mytoy``), the module
    ``userpkg.toy`` on sys.path, and that module registered as the plugin ``toy``."""
    mine, site = tmp_path / "mine", tmp_path / "site"
    mine.mkdir()
    new.write("mytoy", mine)
    (site / "userpkg").mkdir(parents=True)
    (site / "userpkg" / "__init__.py").write_text("")
    new.write("toy", site / "userpkg")
    dist_info = site / "toyplugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.chdir(mine)
    return {"./mytoy": mine / "mytoy", "userpkg.toy": site / "userpkg" / "toy", "toy": site / "userpkg" / "toy"}


def test_a_trainable_is_a_built_in_stem_a_folder_an_importable_module_or_a_plugin(layouts):
    found = {name: registry.find(name) for name in ("asl", "./mytoy", "userpkg.toy", "toy")}
    assert {name: (s.stem, s.module, s.reference) for name, s in found.items()} == {
        "asl": ("asl", "trainables.asl", "asl"),
        "./mytoy": ("mytoy", "mytoy", str(layouts["./mytoy"])),
        "userpkg.toy": ("userpkg.toy", "userpkg.toy", "userpkg.toy"),
        "toy": ("toy", "userpkg.toy", "toy"),
    }
    # What Ray's processes get: the top-level packages of the user's trainables, none of the platform's.
    assert [s.shipped for s in registry.found_outside()] == [layouts["./mytoy"], layouts["toy"].parent, layouts["toy"].parent]
    for name in ("./mytoy", "userpkg.toy", "toy"):
        trainable = registry.load(name)  # the contract, checked
        assert trainable.space.stem == trainable.stem == found[name].stem and "smoke" in trainable.space.TIERS
        assert Path(trainable.package.__file__) == layouts[name] / "__init__.py"
    assert registry.load_config("mytoy")[0] is registry.load("./mytoy").Config  # by its stem from then on


@pytest.mark.parametrize("name", ["./mytoy", "userpkg.toy", "toy"])
def test_a_misspelt_hook_is_one_error_naming_the_users_file_whichever_way_it_came(layouts, name):
    # Defined in a module of the package and imported into it, as a growing trainable does.
    hooks = layouts[name] / "schedules.py"
    hooks.write_text("def epoch_shedule(epoch, cfg):\n    return {}\n")
    with (layouts[name] / "__init__.py").open("a") as init:
        init.write("\nfrom .schedules import epoch_shedule  # noqa: E402, F401\n")
    with pytest.raises(UserError) as raised:
        registry.load(name)
    assert str(raised.value).startswith(
        f"{registry.find(name).module}.schedules ({hooks}) defines epoch_shedule: did you mean epoch_schedule?"
    )


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("json", "trainable folder ./json is named json, like the module json"),
        ("asl", "trainable folder ./asl is named like the built-in trainable asl: rename the folder"),
        ("my-toy", "trainable folder ./my-toy: its name 'my-toy' is imported as a module, so it must be letters, digits and _"),
        ("nospace", "trainable nospace ("),
        ("noinit", "./noinit is no trainable package: it has no __init__.py"),
    ],
)
def test_a_folder_that_cannot_be_a_trainable_is_one_error_naming_it(tmp_path, monkeypatch, folder, message):
    (tmp_path / folder).mkdir()
    if folder != "noinit":
        (tmp_path / folder / "__init__.py").write_text("")
    if folder not in ("nospace", "noinit"):
        (tmp_path / folder / "space.py").write_text("TIERS = {}\nSPACE = {}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(")):
        registry.find(f"./{folder}")


@pytest.mark.parametrize(
    ("broken", "line", "message"),
    [
        ("def loss(model, batch, cfg)\n", 1, "SyntaxError: expected ':'"),
        ("import numpy\nimport not_installed_anywhere\n", 2, "ModuleNotFoundError: No module named 'not_installed_anywhere'"),
        ("raise RuntimeError('no GPU driver')\n", 1, "RuntimeError: no GPU driver"),
    ],
)
def test_code_that_cannot_be_imported_is_one_error_naming_its_line_and_is_read_again_once_fixed(layouts, broken, line, message):
    """As in a notebook: the error is one line, and the fixed file is imported anew in the same process."""
    hooks = layouts["./mytoy"] / "schedules.py"
    hooks.write_text(broken)
    init = layouts["./mytoy"] / "__init__.py"
    init.write_text(init.read_text() + "\nfrom . import schedules  # noqa: E402, F401\n")
    with pytest.raises(UserError) as raised:
        registry.load("./mytoy")
    assert str(raised.value) == f"trainable mytoy cannot be imported: {hooks}:{line}: {message}"
    hooks.write_text("")
    assert registry.load("./mytoy").stem == "mytoy"


def test_a_plugin_is_found_by_its_name_even_beside_a_folder_of_that_name_which_is_refused(layouts, tmp_path):
    beside = tmp_path / "beside"
    new.write("toy", beside)
    os.chdir(beside)
    assert registry.find("toy").module == "userpkg.toy"  # as a run of the plugin, which records "toy", finds it again
    with pytest.raises(UserError, match=r"^trainable folder ./toy is named like the installed plugin trainable toy: rename the folder"):
        registry.find("./toy")


@pytest.mark.parametrize("name", ["~no_such_user_here/mytoy", "./" + "x" * 5000])
def test_a_folder_name_the_file_system_cannot_take_is_one_error(name):
    with pytest.raises(UserError, match="^trainable folder not found: "):
        registry.find(name)


def test_a_run_resumes_only_with_the_trainable_it_trained(layouts, tmp_path):
    """Another folder named mytoy (another model, data, loss) never continues the run's checkpoints."""
    other = tmp_path / "other"
    new.write("mytoy", other)
    config_cls = registry.load_config("./mytoy")[0]
    run_dir = tmp_path / "runs" / "mytoy" / "first"
    run_dir.mkdir(parents=True)
    config_lib.save(config_cls(), run_dir / run_files.CONFIG_FILE)
    run_files.write_json(run_dir / run_files.MANIFEST_FILE, {"stem": "mytoy", "tier": "smoke", "trainable": str(other / "mytoy")})
    with pytest.raises(UserError, match=f"^run {run_dir} trained the trainable {other / 'mytoy'}, not {layouts['./mytoy']}: "):
        open_run(Request("mytoy"), Launch(storage=str(tmp_path / "runs"), name="first", resume=True))
    assert json.loads((run_dir / run_files.MANIFEST_FILE).read_text())["trainable"] == str(other / "mytoy")  # untouched


def test_new_refuses_a_name_that_cannot_be_a_package_and_writes_nothing(tmp_path):
    (tmp_path / "taken").mkdir()
    for name, message in [
        ("taken", "already exists"),
        ("json", "is the name of the module json"),
        ("asl", "is a built-in"),
        ("9x", "cannot be"),
    ]:
        with pytest.raises(UserError, match=message):
            new.write(name, tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["taken"]


def test_the_new_packages_own_test_passes(layouts):
    path = layouts["./mytoy"] / "tests" / "test_mytoy.py"
    spec = importlib.util.spec_from_file_location("test_mytoy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.test_mytoy_keeps_the_contract_and_learns_its_smoke_set()


def test_a_run_finds_its_trainable_again_by_its_manifest(tmp_path, monkeypatch, capsys):
    assert registry.recorded({"stem": "asl"}) == "asl"  # a run from before trainables came from anywhere
    assert registry.recorded({"stem": "mytoy", "trainable": str(tmp_path)}) == str(tmp_path)
    gone = str(tmp_path / "moved" / "mytoy")
    assert registry.recorded({"stem": "mytoy", "trainable": gone}) == "mytoy"  # looked for from here: ./mytoy
    assert capsys.readouterr().err == f"warning: the run's trainable folder {gone} is gone; looking for mytoy from here\n"


def test_a_hook_with_the_wrong_arguments_is_one_error_naming_the_users_file(layouts):
    init = layouts["./mytoy"] / "__init__.py"
    init.write_text(init.read_text().replace("batch: dict, cfg: Config) -> tuple", "batch: dict) -> tuple"))
    with pytest.raises(UserError) as raised:
        registry.load("./mytoy")
    assert str(raised.value) == f"mytoy ({init}) defines loss(model, batch): the platform calls loss(model, batch, cfg)"


def test_a_config_with_the_old_limits_dict_is_one_error_naming_the_trainable(layouts):
    config = layouts["./mytoy"] / "config.py"
    config.write_text(config.read_text() + "\nConfig.LIMITS = {'hidden': (1, None)}\n")
    with pytest.raises(UserError) as raised:
        registry.load("./mytoy")
    assert str(raised.value).startswith(f"mytoy's Config ({config}) declares LIMITS: limits now go beside each field")


@pytest.mark.parametrize(
    "command",
    [["run", "--help"], ["run", "--print-config"], ["run", "--tier", "smoke"], ["tune", "--tiers", "smoke"]],
    ids=" ".join,
)
def test_a_misspelt_tiers_is_the_same_one_error_line_for_every_command(layouts, tmp_path, command):
    space = layouts["./mytoy"] / "space.py"
    space.write_text(space.read_text().replace("TIERS =", "TIER ="))
    from helpers import run_command  # here: the file's imports are being edited beside this change

    module, *options = command
    shown = run_command(module, str(layouts["./mytoy"]), *options, "--storage", str(tmp_path / "runs"))
    line = f"error: search space mytoy.space ({space}) does not define TIERS (see trainables/__init__.py)\n"
    assert (shown.returncode, shown.stderr) == (2, line)
    assert not (tmp_path / "runs").exists()


# The preprocessed store's key of a trainable of the user's covers its code (platform/data/ingest.py).
RAW = pa.Table.from_pylist([{"features": [0.5, 1.5], "label": 1}])  # the same rows for every key
META = {"content_hash": "sha256:pinned"}
# asl's key for these rows before trainables could come from outside (commit before #33): its stores stay valid.
ASL_KEY = "store/asl-cfb2f77b1c60ff1654cd/train"


def _store_key(name: str, tier: str = "smoke") -> str:
    """The store a run of ``name`` would read its train split from, in a process of its own."""
    registry._FOUND.clear()
    for module in [m for m in sys.modules if m.split(".")[0] == "mytoy"]:
        del sys.modules[module]
    trainable = registry.load(name)
    cfg = registry.resolve(name, tier)
    return ingest.split_uri("store", ingest.identity(trainable, cfg, META, "train", RAW))


def _mytoy(where: Path) -> Path:
    where.mkdir()
    return new.write("mytoy", where)


def test_a_user_trainable_whose_preprocess_changed_is_preprocessed_anew(tmp_path):
    first, other = _mytoy(tmp_path / "first"), _mytoy(tmp_path / "other")
    (other / "__init__.py").write_text((other / "__init__.py").read_text().replace("np.float32) for row", "np.float32) * 2 for row"))
    assert (first / "__init__.py").read_text() != (other / "__init__.py").read_text()
    before = _store_key(str(first))
    assert _store_key(str(first)) == before, "the same code reads its store back"
    assert _store_key(str(other)) != before, "another folder named mytoy with another preprocess"
    (first / "tests" / "test_mytoy.py").write_text("# its tests are not its preprocessing\n")
    assert _store_key(str(first)) == before
    (first / "__init__.py").write_text((other / "__init__.py").read_text())
    assert _store_key(str(first)) == _store_key(str(other)), "the folder edited to the other's code: the other's store"


def test_a_built_in_trainable_keeps_the_store_key_it_had():
    assert _store_key("asl") == ASL_KEY
