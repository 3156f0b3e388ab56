"""Config resolution fuzzed with hypothesis, for every trainable: tiers, ``--config`` YAML and JSON
files (odd values, keys that are not text, NaN, huge numbers, lists for numbers, numbers for lists,
text that is not YAML), ``--data`` folders, ``--set`` pairs, every field against its limits and ``validate``.

Every input ends as a printed config (exit 0) or as one ``error:`` line (exit 2), and writes
nothing; a config that validated builds its model and takes a training step on a two-row batch.
Derandomized: CI explores the same examples every time.

    .venv/bin/python -m pytest tests/test_fuzz_config.py
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import tempfile
import typing
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from platform import config as config_lib
from platform import registry
from platform.errors import UserError
from trainables.pretrained import TINY_BERT

STEMS = registry.stems()
# No explain phase: it reruns a failure hundreds of times to name the lines only failures ran.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow],
)
# Strings for the text fields: the values the tiers use and a few that name nothing.
TEXT_VALUES = ("", "auto", "tiny", "none", "resnet18", "/no/such/model", "~no-such-user/x", "a\nb", "\x00")

# Anything a YAML or JSON file can hold, nested a little.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**62, max_value=2**70),
    st.floats(),
    st.text(max_size=8),
    st.dates(),
)
ANY_VALUE = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2), max_leaves=5
)
ODD_KEYS = st.one_of(st.text(max_size=6), st.integers(-3, 3), st.booleans(), st.none(), st.floats(allow_nan=False))


def field_kinds(config_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def numbers(kind: Any, limit: tuple, span: int, outside: int) -> st.SearchStrategy:
    """Numbers inside a field's limits (``span`` above the lowest when it has no highest), and up to
    ``outside`` beyond them, with NaN and infinity when ``outside``."""
    lowest, highest = limit
    low = lowest if lowest is not None else -span
    high = highest if highest is not None else low + span
    edges = st.sampled_from([kind(low), kind(high)])
    if kind is int:
        return st.integers(math.ceil(low) - outside, math.floor(high) + outside) | edges
    return st.floats(low - outside, high + outside) | edges | (st.sampled_from([math.nan, math.inf]) if outside else st.nothing())


def field_values(kind: Any, limit: tuple, span: int = 40, wild: bool = True) -> st.SearchStrategy:
    """Values for a field: of its type near its limits, and when ``wild`` also outside them and of
    other types (a lone number for a tuple field, text that names no choice)."""
    outside = 2 if wild else 0
    if kind is bool:
        return st.booleans() | (st.sampled_from(["yes", "off", "maybe", 1]) if wild else st.nothing())
    if kind in (int, float):
        return numbers(kind, limit, span, outside)
    if typing.get_origin(kind) is Literal:
        return st.sampled_from(typing.get_args(kind)) | (st.text(max_size=6) if wild else st.nothing())
    if kind is str:
        return st.sampled_from(TEXT_VALUES) | st.text(max_size=8)
    (item_kind, _) = typing.get_args(kind)
    items = numbers(item_kind, limit, span, outside)
    return st.lists(items, max_size=4) | (items if wild else st.nothing())


@st.composite
def mappings(draw, kinds: dict, limits: dict) -> dict:
    """Some fields with values of their kind or of any kind, sometimes a key that names nothing."""
    names = draw(st.lists(st.sampled_from(sorted(kinds)), max_size=4, unique=True))
    chosen = {name: draw(field_values(kinds[name], limits.get(name, (None, None))) | ANY_VALUE) for name in names}
    return {**chosen, **draw(st.dictionaries(ODD_KEYS, ANY_VALUE, max_size=1))}


def as_set_value(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


@st.composite
def set_pairs(draw, kinds: dict, limits: dict) -> list[str]:
    names = draw(st.lists(st.sampled_from(sorted(kinds)), max_size=3))
    pairs = [f"{name}={as_set_value(draw(field_values(kinds[name], limits.get(name, (None, None)))))}" for name in names]
    return pairs + draw(st.lists(st.text(max_size=10), max_size=1))


@st.composite
def config_files(draw, kinds: dict, limits: dict) -> tuple[str, bytes] | None:
    """(file name, contents): a YAML or JSON mapping, any text or any bytes; or no file."""
    form = draw(st.sampled_from(["none", "yaml", "json", "text", "bytes"]))
    if form == "none":
        return None
    if form == "bytes":
        return "cfg.yaml", draw(st.binary(max_size=40))
    if form == "text":
        return draw(st.sampled_from(["cfg.yaml", "cfg.json"])), draw(st.text(max_size=40)).encode()
    values = draw(mappings(kinds, limits))
    if form == "json":
        return "cfg.json", json.dumps(values, default=str).encode()
    return "cfg.yaml", yaml.safe_dump(values, sort_keys=False, allow_unicode=True).encode()


@st.composite
def saved_tiers(draw, space: Any, kinds: dict, limits: dict) -> tuple[str, bytes] | None:
    """(name, contents) of a tier a sweep saved (``registry.saved_tier_path``): well formed, with
    odd values, or not a tier file at all; or none."""
    form = draw(st.sampled_from(["none", "tier", "text"]))
    if form == "none":
        return None
    name = draw(st.sampled_from(["tuned", "best", *space.TIERS]))
    if form == "text":
        return name, draw(st.text(max_size=30)).encode()
    base = draw(st.sampled_from([*space.TIERS, name]) | ANY_VALUE)
    document = {"base": base, "overrides": draw(mappings(kinds, limits) | ANY_VALUE)}
    return name, json.dumps(document, default=str).encode()


def print_config(stem: str, argv: list[str]) -> tuple[int, str, str]:
    """``python -m platform.run STEM ARGV --print-config`` in this process: exit code, stdout, stderr."""
    from platform import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run.main([stem, *argv, "--print-config"])
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def in_empty_folder():
    """A new working folder (where ``runs/`` would go) for the command; yields it."""
    before = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            yield Path(folder)
        finally:
            os.chdir(before)


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.parametrize("stem", STEMS)
@FUZZ
@given(data=st.data())
def test_every_config_input_prints_a_config_or_one_error_line_and_writes_nothing(stem, data):
    config_cls, space = registry.load_config(stem)
    kinds, limits = field_kinds(config_cls), config_lib.limits(config_cls)
    saved = data.draw(saved_tiers(space, kinds, limits), label="saved tier")
    names = [*registry.tier_names(space), *([saved[0]] if saved else [])]
    tier = data.draw(st.sampled_from(names) | st.text(max_size=6), label="tier")
    config_file = data.draw(config_files(kinds, limits), label="config file")
    sets = data.draw(set_pairs(kinds, limits), label="--set")
    data_folder = data.draw(st.sampled_from(["", ".", "a/b"]) | st.sampled_from(TEXT_VALUES) | st.text(max_size=6), label="--data")
    cache = Path(os.environ["RAYPLATFORM_CACHE"])
    cached = listing(cache)
    with in_empty_folder() as folder:
        argv = [f"--tier={tier}", *(f"--set={pair}" for pair in sets), *([f"--data={data_folder}"] if data_folder else [])]
        if saved:  # where the default --storage (./runs) keeps it
            tier_file = registry.saved_tier_path(folder / "runs", stem, saved[0])
            tier_file.parent.mkdir(parents=True)
            tier_file.write_bytes(saved[1])
        if config_file:
            (folder / config_file[0]).write_bytes(config_file[1])
            argv.append(f"--config={folder / config_file[0]}")
        given_files = listing(folder)
        code, out, err = print_config(stem, argv)
        assert listing(folder) == given_files, "print-config wrote files"
    assert listing(cache) == cached, "print-config wrote into the cache"
    event(f"exit {code}")
    if code == 2:
        assert out == "" and len(err.splitlines()) == 1 and err.startswith("error: "), err
        return
    assert code == 0 and err == "", err
    # What it printed is a config file that resolves to itself, from any tier.
    with in_empty_folder() as folder:
        (folder / "printed.yaml").write_text(out)
        again = registry.resolve(stem, "full", config_file=str(folder / "printed.yaml"))
    assert out.split("\n", 1)[1] == config_lib.as_yaml(again)


# ---------------------------------------------------------------- a config that validated trains


# The text and image encoders the smoke tiers use (no download, no weights file); frozen_layers'
# highest is the text model's depth, which build_model checks, not its limits.
KEPT = {"data_dir", "text_model", "image_weights"}
DRAWN_WITHIN = {"frozen_layers": (0, TINY_BERT["num_hidden_layers"])}


def asl_batch(cfg: Any, meta: dict) -> dict:
    frames = min(cfg.max_len, 6)
    mask = torch.ones(2, frames, dtype=torch.bool)
    mask[1, frames // 2 + 1 :] = False
    return {"x": torch.randn(2, frames, 744), "x_mask": mask, "label": torch.tensor([0, 1])}


def captioning_batch(cfg: Any, meta: dict) -> dict:
    from trainables.captioning.vocab import encode_references

    index = {word: i for i, word in enumerate(meta["vocabulary"])}
    captions = [encode_references(["a red circle", "a circle"], index, cfg.max_len, 2), encode_references(["red"], index, cfg.max_len, 2)]
    features = torch.randn(2, meta["image_feature_dim"])
    return {"features": features, "captions": torch.from_numpy(np.stack(captions)), "eval_index": torch.tensor([-1, -1])}


def emotion_batch(cfg: Any, meta: dict) -> dict:
    from trainables import emotion

    rows = [
        {"utterance": "oh no", "speaker": "Ross", "clip": "", "emotion": 3, "sentiment": 2, "dialogue_id": 0, "utterance_id": 0},
        {"utterance": "great!", "speaker": "Joey", "clip": "", "emotion": 1, "sentiment": 1, "dialogue_id": 0, "utterance_id": 1},
    ]
    rows = emotion.dialogue_inputs(rows, cfg.context_turns)
    raw = {key: np.array([row[key] for row in rows]) for key in rows[0]}
    return {key: torch.from_numpy(value) for key, value in emotion.preprocess(raw, cfg).items()}


def gender_bias_batch(cfg: Any, meta: dict) -> dict:
    from trainables import gender_bias

    tokens = {key: torch.from_numpy(value) for key, value in gender_bias.tokenize(["a man and a dog", "two women"], cfg).items()}
    image = torch.zeros(2, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8)
    return {"image": image, **tokens, "score": torch.tensor([1.0, 9.0])}


def xr2text_batch(cfg: Any, meta: dict) -> dict:
    from trainables.xr2text import reports

    index = {word: i for i, word in enumerate(meta["vocab"])}
    tokens = np.stack([reports.encode(text, index, cfg.max_tokens) for text in ("the heart is normal .", "effusion")])
    image = torch.zeros(2, 1, cfg.image_size, cfg.image_size, dtype=torch.uint8)
    return {"image": image, "tokens": torch.from_numpy(tokens), "stage": torch.tensor([0, 1])}


# A two-row batch as each trainable's loss reads it, sized by the config, and the meta its
# build_model reads (what the trainables' own tests give it).
BATCHES = {
    "asl": asl_batch,
    "captioning": captioning_batch,
    "emotion": emotion_batch,
    "gender_bias": gender_bias_batch,
    "xr2text": xr2text_batch,
}
FAKE_META = {
    "asl": {"classes": ["hello", "thanks", "yes"]},
    "captioning": {"vocabulary": ["<pad>", "<start>", "<end>", "<unk>", "a", "red", "circle"], "image_feature_dim": 512},
    "emotion": {},
    "gender_bias": {},
    "xr2text": {"vocab": ["<pad>", "<bos>", "<eos>", "<unk>", "the", "heart", "is", "normal", "."]},
}


@pytest.mark.parametrize("stem", STEMS)
@settings(FUZZ, max_examples=12)
@given(data=st.data())
def test_a_config_that_validates_builds_its_model_and_takes_a_training_step(stem, data):
    assert stem in BATCHES, f"add a two-row batch of {stem} to BATCHES"
    trainable = registry.load(stem)
    kinds, limits = field_kinds(trainable.Config), config_lib.limits(trainable.Config)
    # Small sizes: a model of a million layers validates and then only runs out of memory.
    trial = {
        name: data.draw(field_values(kind, DRAWN_WITHIN.get(name) or limits.get(name, (None, None)), span=24, wild=False), label=name)
        for name, kind in kinds.items()
        if name not in KEPT and data.draw(st.booleans(), label=f"draw {name}")
    }
    tier = registry.tier_overrides(trainable.space, "smoke")
    try:
        cfg = config_lib.resolve(trainable.Config, tier, trial)
    except UserError:
        event("refused")
        return
    event("built")
    torch.manual_seed(0)
    model = trainable.build_model(cfg, FAKE_META[stem]).train()
    if hasattr(trainable.package, "on_epoch_start"):
        trainable.package.on_epoch_start(model, 0, cfg)
    value, metrics = trainable.loss(model, BATCHES[stem](cfg, FAKE_META[stem]), cfg)
    value.backward()
    assert math.isfinite(value.item()), metrics
