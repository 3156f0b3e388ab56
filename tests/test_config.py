"""Config resolution and the registry, without Ray: ``python -m pytest tests/test_config.py``."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import typing

import pytest
from helpers import REPO

from platform import config as config_lib
from platform import registry
from platform.errors import UserError
from platform.tune import space as sweep_space


@dataclasses.dataclass
class ToyConfig(config_lib.TrainConfig):
    width: int = 8
    """Hidden width."""
    sizes: tuple[int, ...] = (1, 2)
    """Sizes of the blocks."""
    name: str = "toy"
    """A name."""


def test_flow_is_defaults_then_tier_then_trial_then_sets():
    cfg = config_lib.resolve(
        ToyConfig,
        tier={"width": 16, "lr": 0.1, "epochs": 3},
        trial={"width": 32, "lr": 0.2},
        sets=["width=64"],
    )
    assert (cfg.width, cfg.lr, cfg.epochs, cfg.batch_size) == (64, 0.2, 3, 32)


def test_sets_are_parsed_by_field_type():
    cfg = config_lib.resolve(ToyConfig, {}, None, ["amp=false", "lr=3e-4", "sizes=4,5,6", "name=abc", "epochs=7"])
    assert cfg.amp is False and cfg.lr == 3e-4 and cfg.sizes == (4, 5, 6) and cfg.name == "abc" and cfg.epochs == 7


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["nope=1"], "unknown config key 'nope' in --set"),
        (["epochs=three"], "config key 'epochs' expects int"),
        (["amp=maybe"], "config key 'amp' expects bool"),
        (["lr"], "--set expects key=value, got 'lr'"),
    ],
)
def test_bad_sets_name_the_key(sets, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        config_lib.resolve(ToyConfig, {}, None, sets)


def test_tier_and_trial_values_are_type_checked():
    with pytest.raises(UserError, match="unknown config key 'depth' in the tier"):
        config_lib.resolve(ToyConfig, {"depth": 3})
    with pytest.raises(UserError, match="'epochs' expects int"):
        config_lib.resolve(ToyConfig, {}, {"epochs": True})
    assert config_lib.resolve(ToyConfig, {}, {"lr": 1}).lr == 1.0


def test_saved_config_round_trips(tmp_path):
    cfg = config_lib.resolve(ToyConfig, {"sizes": (3, 4)}, None, ["seed=5"])
    config_lib.save(cfg, tmp_path / "config.json")
    assert config_lib.from_dict(ToyConfig, json.loads((tmp_path / "config.json").read_text())) == cfg


def test_field_docs_are_the_help_lines():
    docs = config_lib.field_docs(ToyConfig)
    assert docs["width"] == "Hidden width."
    assert docs["lr"] == "Peak learning rate (AdamW)."


def test_registry_knows_asl_and_rejects_unknown_names():
    assert "asl" in registry.stems()
    with pytest.raises(UserError, match="unknown trainable 'nosuch'; known: .*asl"):
        registry.load("nosuch")
    with pytest.raises(UserError, match="unknown tier 'huge' for asl; known: smoke, fast, standard, full"):
        registry.resolve("asl", "huge")
    smoke = registry.resolve("asl", "smoke", ["seed=3"], data_dir="/data")
    assert smoke.seed == 3 and smoke.data_dir == "/data" and smoke.epochs < registry.resolve("asl", "full").epochs


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["epochs=-3"], "config key 'epochs' must be >= 1, not -3"),
        (["batch_size=0"], "config key 'batch_size' must be >= 1, not 0"),
        (["lr=nan"], "config key 'lr' must be a finite number, not nan"),
        (["grad_accum_steps=0"], "config key 'grad_accum_steps' must be >= 1"),
        (["checkpoint_every=0"], "config key 'checkpoint_every' must be >= 1"),
        (["min_lr_ratio=2"], r"config key 'min_lr_ratio' must be in \[0, 1\]"),
        (["scheduler=linear"], "config key 'scheduler' expects .*'linear' is not one of none, cosine, cosine_restarts"),
    ],
)
def test_out_of_range_values_and_unknown_choices_fail_before_any_work(sets, message):
    with pytest.raises(UserError, match=message):
        config_lib.resolve(ToyConfig, {}, None, sets)


def test_a_trainable_declares_its_own_limits_and_choices():
    with pytest.raises(UserError, match="'fusion' expects"):
        registry.resolve("emotion", "smoke", ["fusion=sum"])
    with pytest.raises(UserError, match="'balance' expects"):
        registry.resolve("emotion", "smoke", ["balance=upsample"])
    with pytest.raises(UserError, match="config key 'heads' must be >= 1, not 0"):
        registry.resolve("asl", "smoke", ["heads=0"])
    with pytest.raises(UserError, match=r"config key 'val_fraction' must be in \[0.01, 0.9\]"):
        registry.resolve("asl", "smoke", ["val_fraction=0"])


@pytest.mark.parametrize(
    ("stem", "sets", "message"),
    [
        ("xr2text", ["encoder_stages=5"], r"config key 'encoder_stages' must be in \[1, 4\], not 5"),
        ("xr2text", ["heads=7"], r"config key 'd_model' \(64\) must be divisible by heads \(7\)"),
        ("asl", ["heads=5"], r"config key 'dim' \(32\) must be even and divisible by heads \(5\)"),
        ("xr2text", ["val_fraction=0"], r"config key 'val_fraction' must be in \[0.01, 0.9\], not 0.0"),
        ("xr2text", ["scheduler=step"], "config key 'scheduler' expects .*'step' is not one of none, cosine"),
        ("emotion", ["audio_seconds=0"], "config key 'audio_seconds' must be >= 0.025, not 0.0"),
        ("emotion", ["modality_dropout=1"], r"config key 'modality_dropout' must be in \[0, 0.99\], not 1.0"),
        ("emotion", ["modalities=audio"], "config key 'modalities' expects .*'audio' is not one of text, text,audio"),
        ("emotion", ["tasks=both"], "config key 'tasks' expects .*'both' is not one of emotion, sentiment"),
        ("gender_bias", ["fusion_dim=1"], "config key 'fusion_dim' must be >= 2, not 1"),
        ("gender_bias", ["max_tokens=2"], r"config key 'max_tokens' must be in \[3, 512\], not 2"),
        ("gender_bias", ["scheduler=linear"], "config key 'scheduler' expects .*'linear' is not one of none"),
        ("captioning", ["vocab_size=4"], "config key 'vocab_size' must be >= 5, not 4"),
        ("captioning", ["test_fraction=-0.1"], r"config key 'test_fraction' must be in \[0, 0.9\], not -0.1"),
        ("captioning", ["scheduler=linear"], "config key 'scheduler' expects .*'linear' is not one of none"),
        # Limits hold for each item of a tuple: these passed, then failed in build_model or in every worker retry.
        ("asl", ["tcn_dropouts=2,2,2"], r"config key 'tcn_dropouts' must be in \[0, 0.99\] \(each item\), not 2.0"),
        ("asl", ["tcn_dilations=0,0,0"], r"config key 'tcn_dilations' must be >= 1 \(each item\), not 0"),
        ("asl", ["tcn_dropouts=0.1,nan,0.1"], r"config key 'tcn_dropouts' must be a finite number \(each item\), not nan"),
        ("xr2text", ["curriculum_epochs=-1,2,3"], r"config key 'curriculum_epochs' must be >= 0 \(each item\), not -1"),
        ("xr2text", ["curriculum_epochs=9,2,3"], r"config key 'curriculum_epochs' must be 3 epochs in order .*not \[9, 2, 3\]"),
        ("xr2text", ["curriculum_epochs=1,2"], r"config key 'curriculum_epochs' must be 3 epochs in order"),
        ("emotion", ["seed=-1"], "config key 'seed' must be >= 0, not -1"),
        ("gender_bias", [f"epochs={2**64}"], f"config key 'epochs' must fit in 64 bits, not {2**64}"),
        ("captioning", ["data_dir=~no-such-user/flickr"], r"config key 'data_dir' \('~no-such-user/flickr'\): Could not determine home"),
        ("asl", ["data_dir=a\x00b"], r"config key 'data_dir' \('a\\x00b'\) holds a NUL byte"),
        # The text encoders hold 512 positions: 513 built, then failed in the first forward pass of every worker.
        ("gender_bias", ["max_tokens=513"], r"config key 'max_tokens' must be in \[3, 512\], not 513"),
        ("emotion", ["max_tokens=513"], r"config key 'max_tokens' must be in \[3, 512\], not 513"),
    ],
)
def test_each_trainable_rejects_its_out_of_range_values_and_unknown_choices(stem, sets, message):
    with pytest.raises(UserError, match=message):
        registry.resolve(stem, "smoke", sets)


NUMBER_KINDS = (int, float, tuple[int, ...], tuple[float, ...])


def number_fields(config_cls: type) -> set[str]:
    hints = typing.get_type_hints(config_cls)
    return {f.name for f in dataclasses.fields(config_cls) if hints[f.name] in NUMBER_KINDS}


def unlimited_numbers(config_cls: type) -> set[str]:
    """The int and float fields (and tuples of them) of a Config declared without a low or a high."""
    return number_fields(config_cls) - set(config_lib.limits(config_cls))


def test_the_contract_check_sees_a_number_without_a_limit():
    @dataclasses.dataclass
    class Unbounded(ToyConfig):
        depth: int = config_lib.limited(2)  # limited() with neither bound limits nothing
        """Depth."""

    assert unlimited_numbers(ToyConfig) == {"width", "sizes"}
    assert unlimited_numbers(Unbounded) == {"width", "sizes", "depth"}


@pytest.mark.parametrize("stem", registry.stems())
def test_every_number_has_limits_and_every_tier_and_search_bound_resolves(stem):
    trainable = registry.load(stem)
    space = trainable.space
    assert unlimited_numbers(trainable.Config) == set(), f"{stem}: declare these fields with limited(default, low=..., high=...)"
    for key, (lowest, highest) in config_lib.limits(trainable.Config).items():
        assert key in number_fields(trainable.Config), f"{stem}: {key!r} has limits but is no number"
        assert lowest is None or highest is None or lowest <= highest, f"{stem}: {key} limits {lowest} > {highest}"
    for tier in registry.tier_names(space):
        registry.resolve(stem, tier)
    # Every end of every searched range (and every choice) is a value the config accepts.
    for key, distribution in sweep_space.searched_space(space, trainable.Config, []).items():
        values = getattr(distribution, "choices", None) or (distribution.low, distribution.high)
        for value in values:
            config_lib.resolve(trainable.Config, {}, {key: value})


def test_a_field_redeclared_for_its_default_keeps_its_limits_and_its_own_only_narrow_them():
    @dataclasses.dataclass
    class Redeclared(ToyConfig):
        epochs: int = 5  # a new default: the platform's lowest (1) stays
        lr: float = config_lib.limited(1e-2, low=1e-4, high=1.0)  # narrower than the platform's (>= 1e-12)
        width: int = config_lib.limited(8, low=2)

    @dataclasses.dataclass
    class Loosened(Redeclared):
        lr: float = config_lib.limited(1e-2, low=0.0, high=10.0)  # cannot widen what a base class bounds

    assert (Redeclared().epochs, config_lib.limits(Redeclared)["epochs"]) == (5, (1, None))
    for sets, message in [
        (["epochs=0"], "config key 'epochs' must be >= 1, not 0"),
        (["lr=1e-6"], r"config key 'lr' must be in \[0.0001, 1.0\], not 1e-06"),
        (["lr=2"], r"config key 'lr' must be in \[0.0001, 1.0\], not 2.0"),
        (["width=1"], "config key 'width' must be >= 2, not 1"),
    ]:
        with pytest.raises(UserError, match=message):
            config_lib.resolve(Redeclared, {}, None, sets)
        with pytest.raises(UserError, match=message):
            config_lib.resolve(Loosened, {}, None, sets)
    # Every trainable that re-declares a platform field keeps the platform's limit on it.
    assert config_lib.limits(registry.load_config("asl")[0])["epochs"] == (1, None)
    with pytest.raises(UserError, match="config key 'patience' must be >= 0, not -1"):
        registry.resolve("asl", "smoke", ["patience=-1"])


def test_data_is_a_layer_of_its_own_after_the_trial_and_before_set(tmp_path):
    (tmp_path / "mine.yaml").write_text("data_dir: /from/the/file\n")
    layers = {"tier": {"data_dir": "/from/the/tier"}, "trial": {"data_dir": "/from/the/trial"}, "config_file": str(tmp_path / "mine.yaml")}
    assert config_lib.resolve(ToyConfig, **layers).data_dir == "/from/the/trial"
    assert config_lib.resolve(ToyConfig, **layers, data_dir="/from/data").data_dir == "/from/data"
    assert config_lib.resolve(ToyConfig, **layers, data_dir="/from/data", sets=["data_dir=/from/set"]).data_dir == "/from/set"
    assert registry.resolve("asl", "smoke", data_dir=" folder with spaces ").data_dir == " folder with spaces "  # as given, not a --set


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("a\x00b", r"error: --data \('a\\x00b'\) holds a NUL byte: no path does"),
        ("~no-such-user/x", r"error: --data \('~no-such-user/x'\): Could not determine home directory"),
    ],
)
def test_a_bad_data_folder_is_one_error_naming_data(capsys, data, message):
    from platform import run

    assert run.main(["asl", "--data", data, "--print-config"]) == 2
    assert re.fullmatch(message + r"\.?\n", capsys.readouterr().err)


@pytest.mark.parametrize("stem", registry.stems())
def test_config_keys_are_grouped_by_owner_with_the_synthetic_sets_marked(stem):
    config_cls = registry.load_config(stem)[0]
    groups = config_lib.key_groups(config_cls)
    assert groups["platform"] == [f.name for f in dataclasses.fields(config_lib.TrainConfig)]
    assert groups["synthetic"] == [f.name for f in dataclasses.fields(config_cls) if f.name.startswith("synthetic_")] != []
    assert sorted(sum(groups.values(), [])) == sorted(f.name for f in dataclasses.fields(config_cls))


def test_help_lists_the_platforms_the_trainables_and_the_synthetic_sets_keys_apart(capsys):
    from platform import run

    with pytest.raises(SystemExit):
        run.main(["asl", "--help"])
    keys = capsys.readouterr().out.split("config keys of asl")[1]
    platform_keys, own = keys.split(" asl's keys")
    own, synthetic = own.split(" asl's synthetic-set keys")
    assert "  epochs = 300  (asl's; the platform's is 10)\n      Maximum number of epochs." in platform_keys
    assert "  seed = 0\n" in platform_keys and "max_len" not in platform_keys
    assert "  max_len = 384\n" in own and "synthetic_" not in own and "  seed = " not in own
    assert "  synthetic_signs = 20\n      Synthetic set (no data_dir): number of signs." in synthetic and "max_len" not in synthetic


def print_config(capsys, *args: str) -> str:
    from platform import run

    assert run.main(["asl", *args, "--print-config"]) == 0
    return capsys.readouterr().out


def test_a_config_file_sits_between_the_tier_and_set_and_print_config_writes_one(tmp_path, capsys):
    (tmp_path / "mine.yaml").write_text("lr: 0.005\nepochs: 7\ntcn_dilations: [1, 3]\ntcn_dropouts: [0.1, 0.2]\n")
    printed = print_config(capsys, "--tier", "smoke", "--config", str(tmp_path / "mine.yaml"), "--set", "epochs=9")
    cfg = registry.resolve("asl", "smoke", ["epochs=9"], config_file=str(tmp_path / "mine.yaml"))
    assert (cfg.lr, cfg.epochs, cfg.tcn_dilations, cfg.dim) == (0.005, 9, (1, 3), registry.resolve("asl", "smoke").dim)
    # What --print-config shows is a config file that gives the same config back, whatever the tier.
    (tmp_path / "printed.yaml").write_text(printed)
    again = registry.resolve("asl", "full", config_file=str(tmp_path / "printed.yaml"))
    assert config_lib.to_dict(again) == config_lib.to_dict(cfg)


def test_a_saved_run_config_runs_again_as_a_config_file(tmp_path, capsys):
    cfg = registry.resolve("asl", "fast", ["seed=4", "kernel_size=7"], data_dir=str(tmp_path))
    config_lib.save(cfg, tmp_path / "config.json")  # as every run directory holds it
    assert config_lib.to_dict(registry.resolve("asl", "smoke", config_file=str(tmp_path / "config.json"))) == config_lib.to_dict(cfg)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("depth: 3\n", r"unknown config key 'depth' in --config .*bad.yaml"),
        ("lr: fast\n", "config key 'lr' expects float"),
        ("model:\n  dim: 3\n", "expected one flat mapping of config keys to values"),
        ("- lr\n", "expected one flat mapping"),
        ("lr: [1\n", "not valid YAML"),
        ("epochs: 0\n", "config key 'epochs' must be >= 1, not 0"),
        # These ended in TypeError or OverflowError tracebacks.
        ("tcn_dilations: 5\n", "config key 'tcn_dilations' expects tuple: 5 is not a list"),
        ("foo: 3\n1: 2\n", r"config key 1 in --config .*bad.yaml is not a name: keys are text"),
        ("null: 2\n", r"config key None in --config .*bad.yaml is not a name"),
        (f"lr: {10**400}\n", "config key 'lr' expects float: int too large to convert to float"),
        ("[" * 5000 + "\n", "not valid YAML .*recursion"),
    ],
)
def test_a_bad_config_file_is_one_error_naming_it(tmp_path, capsys, text, message):
    from platform import run

    (tmp_path / "bad.yaml").write_text(text)
    assert run.main(["asl", "--config", str(tmp_path / "bad.yaml"), "--print-config"]) == 2
    assert re.search(message, capsys.readouterr().err.strip().splitlines()[-1])
    assert run.main(["asl", "--config", str(tmp_path / "missing.yaml"), "--print-config"]) == 2
    assert "--config" in capsys.readouterr().err


def test_a_config_file_that_is_not_utf8_or_not_a_path_is_one_error(tmp_path, capsys):
    from platform import run

    (tmp_path / "latin1.yaml").write_bytes("lr: 0.1  # café\n".encode("latin-1"))
    assert run.main(["asl", "--config", str(tmp_path / "latin1.yaml"), "--print-config"]) == 2
    assert capsys.readouterr().err.strip().endswith("latin1.yaml: not UTF-8 text (byte 0xe9 at offset 14)")
    assert run.main(["asl", "--config", "~no-such-user/my.yaml", "--print-config"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: --config '~no-such-user/my.yaml': not a file's path (Could not determine home directory.)"
    )


def test_an_error_is_one_line_whatever_the_input_quotes(tmp_path, capsys):
    from platform import run

    assert run.main(["asl", "--set", "data_dir=runs\nrm -rf x", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.endswith(": runs\\nrm -rf x\n") and err.count("\n") == 1


def test_help_shows_what_each_tier_sets(capsys):
    from platform import run

    with pytest.raises(SystemExit):
        run.main(["asl", "--help"])
    shown = capsys.readouterr().out
    assert "  smoke: " in shown and f"dim={registry.resolve('asl', 'smoke').dim}" in shown
    assert "  full: the defaults" in shown


@pytest.mark.parametrize("stem", registry.stems())
def test_help_and_print_config_import_neither_torch_nor_ray(stem):
    """A person waits for them: the Config comes from the trainable's config.py, the tiers' search
    distributions are data (platform/tune/distributions.py)."""
    code = (
        "import sys; from platform import run\n"
        "for args in ([sys.argv[1], '--help'], [sys.argv[1], '--print-config', '--tier', 'smoke', '--set', 'seed=3']):\n"
        "    try: run.main(args)\n"
        "    except SystemExit: pass\n"
        "print('imported:', [m for m in ('torch', 'ray', 'transformers', 'pandas') if m in sys.modules])"
    )
    shown = subprocess.run([sys.executable, "-c", code, stem], cwd=REPO, capture_output=True, text=True, check=True)
    assert "config keys of" in shown.stdout and "seed: 3" in shown.stdout
    assert shown.stdout.splitlines()[-1] == "imported: []"


def test_ray_noise_is_held_back_and_the_runs_own_lines_pass():
    from platform.tracking import console

    core = "[2026-12-03 03:34:23,315 E 28330 28395] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher'"
    mine = "[asl] epoch 1/2  train/loss 1.4761  val/acc 0.8750"
    failure = "ValueError: the run's own error"
    batch = {"actor_name": "TrainController", "lines": [core, failure], "pid": 1, "is_err": True}
    assert console.kept(batch)["lines"] == [failure]
    assert console.kept({"actor_name": "RayTrainWorker", "lines": [mine]})["lines"] == [mine]
    assert console.kept({"actor_name": "TrainController", "lines": [core]}) is None
    assert console.kept({"actor_name": "PlacementGroupCleaner", "lines": ["Traceback (most recent call last):"]}) is None


def test_a_config_declaring_the_old_limits_dict_is_refused_not_left_unbounded():
    @dataclasses.dataclass
    class OldStyle(ToyConfig):
        LIMITS: typing.ClassVar[dict] = {"width": (1, None)}

    with pytest.raises(UserError) as raised:
        config_lib.resolve(OldStyle, {}, None, ["width=-5"])
    assert str(raised.value) == (
        f"test_config's Config ({__file__}) declares LIMITS: limits now go beside each field, "
        "e.g. hidden: int = limited(64, low=1) (platform/config.py)"
    )


def test_a_config_without_its_own_dataclass_decorator_is_refused_by_name():
    class Undecorated(ToyConfig):
        hidden: int = 3
        """Hidden width."""

    with pytest.raises(UserError) as raised:
        config_lib.resolve(Undecorated, {"hidden": 4})
    assert str(raised.value) == (
        f"test_config's Config ({__file__}) must be a @dataclasses.dataclass (subclassing platform.config.TrainConfig)"
    )


def test_limits_whose_low_is_above_their_high_fail_where_they_are_written():
    with pytest.raises(ValueError, match=r"limited\(4, low=5, high=1\): low is above high"):
        config_lib.limited(4, low=5, high=1)


@pytest.mark.parametrize(
    ("module", "stem"),
    [
        ("trainables.asl.config", "asl"),
        ("trainables.asl", "asl"),
        ("mytoy.config", "mytoy"),
        ("mytoy", "mytoy"),
        ("mypkg.mytoy.config", "mypkg.mytoy"),
    ],
)
def test_an_unknown_key_points_at_the_help_of_its_trainable(module, stem):
    config_cls = dataclasses.make_dataclass("Config", [], bases=(ToyConfig,), namespace={"__module__": module})
    with pytest.raises(UserError) as raised:
        config_lib.resolve(config_cls, {}, None, ["depth=3"])
    assert str(raised.value) == f"unknown config key 'depth' in --set (see --help for the keys of {stem})"
