"""The trivial baseline beside every metric (``platform/runs/baseline.py`` and each trainable's hook), without Ray.

    .venv/bin/python -m pytest -q tests/test_baseline.py

Each trainable's baseline is fitted on a stored training split (written as a preprocessing task
writes one) and scored on its validation split; its score is checked against the same number
computed here independently. End-to-end runs check the manifest block in each test_<stem>.py.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import shared_dataset
from pycocoevalcap.bleu.bleu import Bleu

from platform import monitor
from platform.config import resolve
from platform.data import store
from platform.runs import baseline, plots
from platform.runs.storage import RunLocation
from platform.train import launch
from trainables import asl, captioning, emotion, gender_bias, xr2text

# The modules, not the ``baseline`` hooks of the same name their packages define.
from trainables.captioning import trivial as cap_baseline
from trainables.xr2text import trivial as xr_baseline


def stored(folder: Path, columns: dict) -> store.Split:
    """A one-shard split of preprocessed ``columns``, written the way a preprocessing task writes one."""
    specs = {name: store.column_spec(values) for name, values in columns.items()}
    payload = store.parquet_bytes(store.to_arrow(columns, specs), specs)
    fs, path = store.filesystem(str(folder))
    fs.create_dir(path, recursive=True)
    store.write_atomic(fs, store.join(path, store.shard_name(0)), payload)
    rows = len(next(iter(columns.values())))
    shard = {"file": store.shard_name(0), "rows": rows, "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    return store.Split(str(folder), store.write_manifest(str(folder), [shard], specs, {"test": True}))


def raw(rows: list[dict], keys) -> dict[str, np.ndarray]:
    return {key: np.array([row[key] for row in rows]) for key in keys}


def smoke(module, **changes):
    tiers = importlib.import_module(f"search_spaces.{module.__name__.split('.')[-1]}").TIERS
    return resolve(module.Config, tiers["smoke"], None, [f"{k}={v}" for k, v in changes.items()])


# ---------------------------------------------------------------- each trainable's data, stored


def asl_case(tmp_path):
    cfg = smoke(asl)
    rows, meta = asl.read_index(str(shared_dataset("asl")), cfg.val_fraction, cfg.seed)
    splits = {name: stored(tmp_path / name, asl.preprocess(raw(split, ("path", "label")), cfg)) for name, split in rows.items()}
    train = Counter(row["label"] for row in rows["train"])
    majority = min(train, key=lambda label: (-train[label], label))  # the first class of the most frequent
    expected = {"val/acc": sum(row["label"] == majority for row in rows["val"]) / len(rows["val"])}
    return cfg, splits, meta, expected


def captioning_case(tmp_path):
    cfg = smoke(captioning, data_dir=shared_dataset("flickr8k_dev"))
    rows, meta = captioning.raw_rows(cfg)
    # The baseline reads only these of preprocess's columns (features are the model's, not the baseline's).
    splits = {name: stored(tmp_path / name, raw(split, ("captions", "eval_index"))) for name, split in rows.items()}
    return cfg, splits, meta, None


def gender_bias_case(tmp_path):
    cfg = smoke(gender_bias)
    rows, meta = gender_bias.read_labels(str(gender_bias.synthetic_dataset(cfg)), cfg.val_fraction, cfg.max_samples, cfg.seed)
    keys = ("image_path", "caption", "score")
    splits = {name: stored(tmp_path / name, gender_bias.preprocess(raw(split, keys), cfg)) for name, split in rows.items()}
    mean = np.mean([np.float32(row["score"]) for row in rows["train"]], dtype=np.float64)
    expected = {"val/mae": np.mean([abs(np.float32(row["score"]) - np.float32(mean)) for row in rows["val"]])}
    return cfg, splits, meta, expected


def emotion_case(tmp_path):
    cfg = smoke(emotion, max_rows=400, tasks="emotion,sentiment")
    rows, meta = emotion.data.read_meld(str(shared_dataset("meld")), cfg.max_rows)
    # What build_datasets records before any oversampling (it needs Ray Data for the rest).
    meta["train_class_counts"] = {task: Counter(row[task] for row in rows["train"]) for task in ("emotion", "sentiment")}
    meta["train_class_counts"] = {
        task: [counts[k] for k in range(len(emotion.CLASSES[task]))] for task, counts in meta["train_class_counts"].items()
    }
    # The labels and ids evaluate reads; the constant prediction needs none of the text, audio or video.
    keys = ("emotion", "sentiment", "dialogue_id", "utterance_id")
    splits = {
        name: stored(tmp_path / name, {k: np.asarray(v, dtype=np.int64) for k, v in raw(split, keys).items()})
        for name, split in rows.items()
    }
    counts = Counter(row["emotion"] for row in rows["train"])
    majority = min(counts, key=lambda label: (-counts[label], label))
    expected = {"val/acc": sum(row["emotion"] == majority for row in rows["val"]) / len(rows["val"])}
    return cfg, splits, meta, expected


def xr2text_case(tmp_path):
    cfg = smoke(xr2text)
    studies, meta = xr2text.read_splits(str(xr2text.synthetic_dataset(cfg)), cfg)
    index = {word: i for i, word in enumerate(meta["vocab"])}
    splits = {}
    for name, split in studies.items():
        rows = xr2text.data.rows_of(split, index, cfg.max_tokens)
        splits[name] = stored(tmp_path / name, xr2text.preprocess(raw(rows, rows[0].keys()), cfg))
    return cfg, splits, meta, None


def quoted(predictor: str) -> str:
    """The text a caption or report baseline names: ``caption 'a dog runs' for every image``."""
    return ast.literal_eval(re.match(r"\w+ ('.*'|\".*\") for every", predictor).group(1))


CASES = {
    "asl": (asl, asl_case),
    "captioning": (captioning, captioning_case),
    "gender_bias": (gender_bias, gender_bias_case),
    "emotion": (emotion, emotion_case),
    "xr2text": (xr2text, xr2text_case),
}


@pytest.mark.parametrize("stem", sorted(CASES))
def test_every_trainable_has_a_baseline_scored_on_val_and_test_under_its_metric_names(stem, tmp_path):
    module, case = CASES[stem]
    cfg, splits, meta, expected = case(tmp_path)
    block = baseline.fit(module, cfg, splits, meta)
    metric, _mode = module.METRIC
    assert isinstance(block["predictor"], str) and block["predictor"] and "\n" not in block["predictor"]
    assert set(block) == {"predictor", *(name for name in ("val", "test") if name in splits)}
    assert math.isfinite(block["val"][metric]) and all(key.startswith("val/") for key in block["val"])
    if "test" in splits:
        assert set(block["test"]) == {key.replace("val/", "test/", 1) for key in block["val"]}
    for key, value in (expected or {}).items():
        assert block["val"][key] == pytest.approx(value, abs=1e-6), key


def test_the_caption_baseline_is_a_training_caption_scored_by_the_captioning_metrics(tmp_path):
    cfg, splits, meta, _ = captioning_case(tmp_path)
    block = baseline.fit(captioning, cfg, splits, meta)
    caption = quoted(block["predictor"])
    rows = captioning.raw_rows(cfg)[0]
    images = [
        [captioning.decode(ids, meta["vocabulary"]) for ids in row["captions"] if ids[0] == captioning.START] for row in rows["train"]
    ]
    candidates, references = cap_baseline.candidates_and_references(images, cfg.seed)
    assert caption in candidates and len(candidates) == min(cap_baseline.CANDIDATES, len(images) // 2)

    def bleu(text):  # pycocoevalcap's BLEU, as the trainable's metrics score it: BLEU-4, ties broken by 3, 2, 1
        scores, _ = Bleu(4).compute_score(dict(enumerate(references)), {k: [text] for k in range(len(references))}, verbose=0)
        return tuple(reversed(scores))

    assert bleu(caption) == max(bleu(candidate) for candidate in candidates)
    val_images = [meta["eval_images"][row["eval_index"]] for row in rows["val"]]
    again = captioning.caption_metrics([{"references": image["references"], "prediction": caption} for image in val_images])
    assert block["val"] == pytest.approx(again)
    # A caption a real set's images share scores something against them.
    assert block["val"]["val/bleu1"] > 0.1


def test_the_report_baseline_is_scored_by_the_report_metrics(tmp_path):
    cfg, splits, meta, _ = xr2text_case(tmp_path)
    block = baseline.fit(xr2text, cfg, splits, meta)
    studies, _ = xr2text.read_splits(str(xr2text.synthetic_dataset(cfg)), cfg)
    report = quoted(block["predictor"])
    train = [xr2text.reports.normalized(s["report"]) for s in studies["train"]]
    candidates, references = xr_baseline.candidates_and_references(train, cfg.seed)
    metric = xr2text.METRIC[0]
    best = max(xr2text.caption_metrics(references, [c] * len(references))[metric] for c in candidates)
    assert report in candidates and xr2text.caption_metrics(references, [report] * len(references))[metric] == pytest.approx(best)
    truth = [xr2text.reports.normalized(s["report"]) for s in studies["val"]]
    assert block["val"] == pytest.approx(xr2text.caption_metrics(truth, [report] * len(truth)))


# ---------------------------------------------------------------- the platform's pieces


def test_a_resumed_run_keeps_its_baseline_without_fitting_it_again():
    saved = {"predictor": "majority class 'hello' (50% of training rows)", "val": {"val/acc": 0.5}}
    # No splits at all: fitting would have to read the training split.
    assert baseline.of_run(asl, smoke(asl), {}, {}, saved) is saved
    with pytest.raises(KeyError):
        baseline.of_run(asl, smoke(asl), {}, {"classes": ["a", "b"]}, None)


def test_training_columns_are_read_alone_and_an_unknown_one_is_named(tmp_path):
    split = stored(tmp_path, {"x": [np.ones((n, 3), np.float16) for n in (2, 5, 1)], "label": np.array([2, 0, 2])})
    batches = list(baseline.train_columns(split, ["label"], batch_size=2))
    assert [sorted(b) for b in batches] == [["label"], ["label"]]
    assert torch.cat([b["label"] for b in batches]).tolist() == [2, 0, 2]
    with pytest.raises(KeyError, match="'score'"):
        list(baseline.train_columns(split, ["score"], 2))


def test_a_constant_predicts_its_value_for_every_row_and_prior_logits_pick_the_majority():
    logits = baseline.prior_logits([3, 5, 5, 0])
    assert int(logits.argmax()) == 1 and math.isfinite(float(logits[3]))  # first of a tie; an absent class is finite
    assert torch.allclose(logits.exp().sum(), torch.tensor(1.0))
    out = baseline.Constant(logits)(torch.zeros(4, 7, 2), torch.ones(4, 7))
    assert out.shape == (4, 4) and torch.equal(out[2], logits)
    heads = baseline.Constant({"a": torch.tensor([1.0, 2.0]), "b": torch.tensor(0.5)})({"ids": torch.zeros(3, 5)})
    assert heads["a"].shape == (3, 2) and heads["b"].tolist() == [0.5] * 3


def finished_manifest(best: float, trivial: float, mode_test: float = 0.3) -> dict:
    return {
        "stem": "captioning",
        "tier": "smoke",
        "metric": {"name": "val/bleu4", "mode": "max", "best": best},
        "training": {"epochs_completed": 3, "best_epoch": 2, "restarts": 0},
        "model": {"parameters": 1234},
        "inference": {"ms_median": 1.5},
        "test_metrics": {"test/bleu4": mode_test, "test/loss": 2.0},
        "baseline": {"predictor": "caption 'a dog runs' for every image", "val": {"val/bleu4": trivial}, "test": {"test/bleu4": 0.05}},
    }


def test_the_summary_prints_the_baseline_beside_the_metric_on_val_and_test(tmp_path):
    location = RunLocation(local=tmp_path / "captioning" / "e2e")
    text = launch.summary(location, finished_manifest(0.14, 0.09), str(tmp_path))
    assert "best val/bleu4 0.1400 (baseline 0.0900) at epoch 2" in text
    assert "test/bleu4 0.3000 (baseline 0.0500)" in text and "test/loss 2.0000  " not in text


@pytest.mark.parametrize(
    "best, trivial, mode, warned",
    [
        (0.14, 0.09, "max", False),
        (0.09, 0.09, "max", True),
        (0.05, 0.09, "max", True),
        (float("nan"), 0.09, "max", True),
        (1.2, 1.5, "min", False),
        (1.5, 1.2, "min", True),
    ],
)
def test_a_run_that_does_not_beat_its_baseline_is_warned_about(best, trivial, mode, warned):
    block = {"predictor": "mean score 4.20 of the training rows", "val": {"val/mae": trivial}}
    line = baseline.warning("gender_bias", block, "val/mae", mode, best)
    assert (line is not None) == warned
    if warned:
        assert line.startswith("warning: [gender_bias] the best val/mae") and "mean score 4.20" in line
        assert "\n" not in line
    assert baseline.warning("gender_bias", None, "val/mae", mode, best) is None  # no hook, no warning


def test_the_monitor_shows_the_baseline_beside_the_best_metric():
    info = {
        "run": "runs/asl/a",
        "stem": "asl",
        "tier": "smoke",
        "status": "finished",
        "epoch": 2,
        "epochs": 2,
        "eta": "-",
        "metric": "val/acc",
        "best": 0.75,
        "baseline": 0.5,
        "latest": {},
        "restarts": 0,
        "checkpoints": "none yet",
        "dashboard": None,
    }
    assert "best val/acc 0.7500 (baseline 0.5000)" in monitor.format_run(info)
    assert "(baseline" not in monitor.format_run({**info, "baseline": None})


def test_the_curves_draw_the_baseline_dashed_on_its_metrics_panels():
    history = [{"epoch": e, "lr": 0.1, "train/acc": 0.1 * e, "val/acc": 0.2 * e, "train/loss": 1.0, "val/loss": 1.0} for e in (1, 2, 3)]
    figure = plots.curves_figure(history, "t", {"val/acc": 0.35, "val/top5": 0.9})
    dashed = {axis.get_title(): [line.get_ydata()[0] for line in axis.get_lines() if line.get_linestyle() == "--"] for axis in figure.axes}
    assert dashed["acc"] == [0.35] and dashed["loss"] == [] and dashed["lr"] == []
