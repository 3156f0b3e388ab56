"""The trainable contract (platform/contract.py), checked for every trainable when the registry loads
it, and each way of breaking it is one error naming the trainable and what is wrong.

    .venv/bin/python -m pytest tests/test_contract.py
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import subprocess
import sys
import types
import typing

import pytest
from helpers import REPO

from platform import config as config_lib
from platform import contract, registry
from platform.errors import UserError


@pytest.mark.parametrize("stem", registry.stems())
def test_every_trainable_keeps_the_contract_and_every_tier_resolves(stem):
    trainable = registry.load(stem)  # contract.check, or a UserError
    space = trainable.space
    for tier in space.TIERS.values():
        config_lib.resolve(trainable.Config, tier)
    for alias in getattr(space, "ALIASES", {}):
        assert registry.tier_overrides(space, alias) == space.TIERS[space.ALIASES[alias]]


def test_a_loaded_trainable_is_one_object_with_its_hooks_space_and_stem():
    trainable = registry.load("captioning")
    assert (trainable.stem, trainable.space.name) == ("captioning", "search_spaces.captioning")
    assert trainable.build_model is trainable.package.build_model and trainable.METRIC == trainable.package.METRIC
    assert not hasattr(trainable, "epoch_shedule")  # an absent optional hook reads as absent
    assert copy.copy(trainable) == trainable


def copies(stem: str = "asl") -> tuple[types.ModuleType, types.ModuleType]:
    """Editable copies of a real trainable and its search space."""
    trainable, space = registry.load(stem).package, importlib.import_module(registry.load(stem).space.name)
    fake_trainable, fake_space = types.ModuleType(trainable.__name__), types.ModuleType(space.__name__)
    vars(fake_trainable).update({k: v for k, v in vars(trainable).items() if not k.startswith("__")})
    vars(fake_space).update({k: v for k, v in vars(space).items() if not k.startswith("__")})
    fake_space.TIERS = {name: dict(values) for name, values in space.TIERS.items()}
    return fake_trainable, fake_space


def defined_in(module: types.ModuleType, function):
    function.__module__ = module.__name__  # as if written in the trainable's file, not imported into it
    return function


def broken(change) -> str:
    trainable, space = copies()
    change(trainable, space)
    with pytest.raises(UserError) as raised:
        contract.check(trainable, space)
    return str(raised.value)


def test_each_way_of_breaking_the_contract_is_one_error_naming_it():
    assert broken(lambda t, s: delattr(t, "evaluate")) == "trainable trainables.asl does not define evaluate() (see trainables/__init__.py)"
    assert broken(lambda t, s: setattr(t, "epoch_shedule", defined_in(t, lambda epoch, cfg: {}))).startswith(
        "trainables.asl defines epoch_shedule: did you mean epoch_schedule?"
    )
    assert (
        broken(lambda t, s: setattr(t, "METRIC", ("acc", "max")))
        == "trainable trainables.asl: METRIC must be ('val/<name>', 'max' or 'min'), not ('acc', 'max')"
    )
    assert (
        broken(lambda t, s: setattr(t, "Config", dict))
        == "trainable trainables.asl: Config must be a dataclass subclassing platform.config.TrainConfig"
    )
    assert (
        broken(lambda t, s: setattr(t, "PREPROCESS_KEYS", ("max_len", "max_lenght")))
        == "trainables.asl: PREPROCESS_KEYS names max_lenght, which the Config does not have"
    )
    assert (
        broken(lambda t, s: s.TIERS["fast"].update(learning_rate=0.1))
        == "search_spaces.asl: tier 'fast' names learning_rate, which the Config does not have"
    )
    assert (
        broken(lambda t, s: setattr(s, "ALIASES", {"quick": "fastest"}))
        == "search space search_spaces.asl: ALIASES point at fastest, which TIERS lacks"
    )
    assert broken(lambda t, s: setattr(s, "EPOCH_SECOND", {"fast": 3.0})).startswith(
        "search_spaces.asl defines EPOCH_SECOND: did you mean EPOCH_SECONDS?"
    )


def test_no_trainable_imports_ray():
    """A trainable is a plain PyTorch package: it returns rows, the platform makes Ray datasets."""
    code = (
        "import importlib, sys\n"
        "for stem in sys.argv[1:]:\n"
        "    module = importlib.import_module(f'trainables.{stem}')\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    shown = subprocess.run([sys.executable, "-c", code, *registry.stems()], cwd=REPO, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "[]"


def test_a_hook_taking_other_arguments_than_the_platform_passes_is_one_error_before_anything_runs():
    assert (
        broken(lambda t, s: setattr(t, "loss", defined_in(t, lambda model, batch: (0.0, {}))))
        == "trainables.asl defines loss(model, batch): the platform calls loss(model, batch, cfg)"
    )
    assert (
        broken(lambda t, s: setattr(t, "epoch_schedule", defined_in(t, lambda epoch: {})))
        == "trainables.asl defines epoch_schedule(epoch): the platform calls epoch_schedule(epoch, cfg)"
    )
    assert (
        broken(lambda t, s: setattr(t, "predict", defined_in(t, lambda model, inputs, cfg, meta, top: [])))
        == "trainables.asl defines predict(model, inputs, cfg, meta, top): the platform calls predict(model, inputs, cfg, meta, **options)"
    )


def test_a_hook_may_take_more_arguments_with_defaults_or_any_arguments():
    trainable, space = copies()
    trainable.loss = defined_in(trainable, lambda *args: (0.0, {}))
    trainable.evaluate = defined_in(trainable, lambda model, batches, cfg, extra=1, **rest: {})
    trainable.predict = defined_in(trainable, lambda model, inputs, cfg, meta, beam=None: [])
    trainable.on_epoch_start = defined_in(trainable, lambda model, epoch, *more: None)
    contract.check(trainable, space)


def space_of(**constants) -> types.ModuleType:
    module = types.ModuleType("search_spaces.mine")
    vars(module).update(constants)
    return module


@pytest.mark.parametrize(
    ("constants", "message"),
    [
        ({"TIER": {"smoke": {}}, "SPACE": {}}, "search space search_spaces.mine does not define TIERS (see trainables/__init__.py)"),
        ({"TIERS": {"smoke": {}}}, "search space search_spaces.mine does not define SPACE (see trainables/__init__.py)"),
        (
            {"TIERS": {"smoke": ["epochs"]}, "SPACE": {}},
            "search space search_spaces.mine: TIERS must be a dict of tier name to a dict of config values",
        ),
        ({"TIERS": [], "SPACE": {}}, "search space search_spaces.mine: TIERS must be a dict of tier name to a dict of config values"),
        (
            {"TIERS": {"smoke": {}}, "SPACE": {}, "ALIASES": {"quick": "fast"}},
            "search space search_spaces.mine: ALIASES point at fast, which TIERS lacks",
        ),
    ],
)
def test_a_malformed_search_space_is_one_error_wherever_it_is_read(constants, message):
    with pytest.raises(UserError) as raised:
        contract.SearchSpace.of(space_of(**constants), "mine")  # what --help and --print-config read
    assert str(raised.value) == message
    trainable, _ = copies()
    with pytest.raises(UserError) as checked:
        contract.check(trainable, space_of(**constants))  # what run and tune check
    assert str(checked.value) == message


def test_a_config_the_platform_would_read_wrong_is_refused_by_the_contract():
    class Undecorated(registry.load("asl").Config):
        pass

    @dataclasses.dataclass
    class OldStyle(registry.load("asl").Config):
        LIMITS: typing.ClassVar[dict] = {"dim": (2, None)}

    named = f"test_contract's Config ({__file__})"
    assert broken(lambda t, s: setattr(t, "Config", Undecorated)).startswith(f"{named} must be a @dataclasses.dataclass")
    assert broken(lambda t, s: setattr(t, "Config", OldStyle)).startswith(f"{named} declares LIMITS")
