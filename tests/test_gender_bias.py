"""The gender-bias trainable without Ray: labels.csv folders, the synthetic set, model, loss, metrics, predict.

Run with ``cd <repo> && .venv/bin/python -m pytest tests/test_gender_bias.py``.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import png_header_only
from PIL import Image

from platform.config import resolve
from platform.errors import UserError
from search_spaces.gender_bias import TIERS
from trainables import gender_bias as gb
from trainables import image_encoders
from trainables.gender_bias import data, synthetic
from trainables.gender_bias import model as model_lib

SOCIAL = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "social"
needs_social = pytest.mark.skipif(not (SOCIAL / "posts.csv").is_file(), reason=f"real-format social posts sample not found at {SOCIAL}")


@pytest.fixture(scope="module")
def smoke_cfg() -> gb.Config:
    return resolve(gb.Config, TIERS["smoke"])


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory, smoke_cfg) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYPLATFORM_CACHE", str(tmp_path_factory.mktemp("cache")))
        return gb.synthetic_dataset(smoke_cfg)


@pytest.fixture(scope="module")
def synthetic_splits(synthetic_dir, smoke_cfg):
    return data.read_labels(str(synthetic_dir), smoke_cfg.val_fraction, smoke_cfg.max_samples, smoke_cfg.seed)


def raw_batch(rows: list[dict]) -> dict[str, np.ndarray]:
    return {key: np.array([r[key] for r in rows]) for key in ("image_path", "caption", "score")}


def batch_of(rows: list[dict], cfg: gb.Config) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(value) for key, value in gb.preprocess(raw_batch(rows), cfg).items()}


def write_labels(folder: Path, rows: list[dict]) -> Path:
    full = [
        {
            "reason": "r",
            "model": "m",
            "prompt_version": "v1",
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "cost_usd": 0.001,
            "latency_s": 0.5,
            "cached": False,
            **row,
        }
        for row in rows
    ]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(full, columns=list(data.LABEL_COLUMNS)).to_csv(folder / "labels.csv", index=False)
    return folder


def jpeg(path: Path, colour=(200, 30, 30)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path)
    return str(path)


# ---------------------------------------------------------------- reading labels.csv


@needs_social
def test_a_labeled_copy_of_the_social_posts_reads_with_absolute_and_relative_paths(tmp_path):
    posts = pd.read_csv(SOCIAL / "posts.csv", dtype=str)
    scores = np.random.default_rng(0).uniform(0, 10, len(posts)).round(2)
    # Relative to the labels folder (images copied in) for half, absolute into the sample for the rest.
    shutil.copytree(SOCIAL / "images", tmp_path / "labeled" / "images")
    paths = [p if k % 2 else str(SOCIAL / p) for k, p in enumerate(posts["image_path"])]
    rows = [
        {"post_id": i, "image_path": p, "caption": c, "score": s} for i, p, c, s in zip(posts["post_id"], paths, posts["caption"], scores)
    ]
    folder = write_labels(tmp_path / "labeled", rows)
    pd.DataFrame({"post_id": ["x1", "x2"], "reason": ["timeout", "bad reply"]}).to_csv(folder / "quarantine.csv")

    splits, meta = data.read_labels(str(folder), val_fraction=0.25, seed=0)
    assert meta["num_posts"] == len(posts) == 80 and meta["quarantined"] == 2
    assert meta["split_sizes"] == {"train": 60, "val": 20} and meta["content_hash"].startswith("sha256:")
    assert meta["labeling"] == {"models": ["m"], "prompt_versions": ["v1"], "cost_usd": 0.08}
    every = splits["train"] + splits["val"]
    assert sorted(r["post_id"] for r in every) == sorted(posts["post_id"])
    assert all(Path(r["image_path"]).is_absolute() and Path(r["image_path"]).is_file() for r in every)
    assert data.read_labels(str(folder), val_fraction=0.25, seed=0) == (splits, meta)
    _, capped_meta = data.read_labels(str(folder), val_fraction=0.25, max_samples=20, seed=0)
    assert capped_meta["split_sizes"] == {"train": 15, "val": 5}

    cfg = gb.Config(image_size=48, max_tokens=24, text_model="tiny")
    batch = gb.preprocess(raw_batch(splits["val"][:4]), cfg)
    assert batch["image"].shape == (4, 3, 48, 48) and batch["image"].dtype == np.uint8
    assert batch["image"].std() > 10, "real photos, not blank images"


def test_missing_folder_file_and_columns_are_user_errors_naming_the_file(tmp_path):
    with pytest.raises(UserError, match="nowhere: data folder not found"):
        data.read_labels(str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match=r"labels\.csv: not found"):
        data.read_labels(str(tmp_path))
    (tmp_path / "labels.csv").write_text("post_id,caption\np1,hello\n")
    with pytest.raises(UserError, match=r"labels\.csv: missing column\(s\) image_path, score"):
        data.read_labels(str(tmp_path))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"caption": "  "}, r"labels\.csv line 3 \(post p2\): empty caption"),
        ({"score": "11"}, r"line 3 \(post p2\): score '11' is not a number in 0\.\.10"),
        ({"score": "high"}, r"line 3 \(post p2\): score 'high' is not"),
        ({"image_path": "images/gone.jpg"}, r"line 3 \(post p2\): image not found: .*images/gone\.jpg"),
    ],
)
def test_a_bad_row_is_a_user_error_naming_its_line(tmp_path, change, message):
    good = {"post_id": "p1", "image_path": "images/a.jpg", "caption": "a caption", "score": "3.5"}
    jpeg(tmp_path / "images" / "a.jpg")
    write_labels(tmp_path, [good, {**good, "post_id": "p2", **change}])
    with pytest.raises(UserError, match=message):
        data.read_labels(str(tmp_path))


def test_an_unreadable_image_is_a_user_error_naming_it_in_preprocess(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    cfg = gb.Config(image_size=32, max_tokens=8, text_model="tiny")
    rows = [{"image_path": str(broken), "caption": "hi", "score": 1.0}]
    with pytest.raises(UserError, match=f"{broken}: not a readable image"):
        gb.preprocess(raw_batch(rows), cfg)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"post_id,image_path,caption,score\n", "a header but no rows"),
        (b"post_id,image_path,caption,score\np1,images/a.jpg,caf\xe9,3\n", "not UTF-8 text (byte 0xe9 on line 2)"),
    ],
)
def test_an_empty_header_only_or_non_utf8_labels_csv_is_a_user_error_naming_it(tmp_path, content, message):
    (tmp_path / "labels.csv").write_bytes(content)
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'labels.csv'}: {message}")):
        data.read_labels(str(tmp_path))


@pytest.mark.parametrize("image", ["../outside.jpg", "images/../../outside.jpg"])
def test_a_relative_image_path_outside_the_data_folder_is_a_user_error_naming_it(tmp_path, image):
    jpeg(tmp_path / "outside.jpg")
    good = {"post_id": "p1", "image_path": "images/a.jpg", "caption": "a caption", "score": "3.5"}
    jpeg(tmp_path / "data" / "images" / "a.jpg")
    folder = write_labels(tmp_path / "data", [good, {**good, "post_id": "p2", "image_path": image}])
    where = f"{folder / 'labels.csv'} line 3 (post p2)"
    with pytest.raises(UserError, match=re.escape(f"{where}: path {image!r} points outside the data folder")):
        data.read_labels(str(folder))


def test_a_decompression_bomb_is_a_user_error_naming_it_in_preprocess(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 9_000, 9_000)
    cfg = gb.Config(image_size=32, max_tokens=8, text_model="tiny")
    rows = [{"image_path": str(bomb), "caption": "hi", "score": 1.0}]
    with pytest.raises(UserError, match=re.escape(f"{bomb}: 9000x9000 pixels, more than the 64,000,000 pixels")):
        gb.preprocess(raw_batch(rows), cfg)


# ---------------------------------------------------------------- the synthetic set


def test_synthetic_set_is_in_the_labeler_layout(synthetic_dir, smoke_cfg):
    labels = pd.read_csv(synthetic_dir / "labels.csv")
    assert list(labels.columns) == list(data.LABEL_COLUMNS) and len(labels) == smoke_cfg.synthetic_samples
    assert labels["score"].between(0, 10).all() and labels["score"].std() > 2
    assert not labels["image_path"].map(lambda p: Path(p).is_absolute()).any()
    with Image.open(synthetic_dir / labels["image_path"][0]) as image:
        assert image.format == "JPEG" and image.size == (synthetic.IMAGE_PIXELS,) * 2
    # The score follows both the caption and the image's colour.
    stereotyped = labels["reason"].str.contains("stereotyped")
    warm = labels["reason"].str.contains("warm")
    assert labels["score"][stereotyped].mean() - labels["score"][~stereotyped].mean() > 3
    assert labels["score"][warm].mean() - labels["score"][~warm].mean() > 1.5


def test_synthetic_set_is_written_once_and_then_reused(synthetic_dir, smoke_cfg, monkeypatch):
    monkeypatch.setenv("RAYPLATFORM_CACHE", str(synthetic_dir.parents[1]))
    written = (synthetic_dir / "labels.csv").stat().st_mtime_ns

    def no_rewrite(*_):
        raise AssertionError("the cached synthetic set was written again")

    monkeypatch.setattr(synthetic, "_write_synthetic", no_rewrite)
    assert gb.synthetic_dataset(smoke_cfg) == synthetic_dir
    assert (synthetic_dir / "labels.csv").stat().st_mtime_ns == written
    assert not [p for p in synthetic_dir.parent.iterdir() if p.name.startswith(".")], "no temp dir left"


# ---------------------------------------------------------------- preprocess and model


def test_preprocess_gives_uint8_images_padded_tokens_and_float_scores(synthetic_splits, smoke_cfg):
    splits, _ = synthetic_splits
    batch = gb.preprocess(raw_batch(splits["train"][:5]), smoke_cfg)
    assert batch["image"].shape == (5, 3, 32, 32) and batch["image"].dtype == np.uint8
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (5, 16)
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == np.int64
    assert batch["score"].dtype == np.float32 and batch["score"].shape == (5,)
    assert (batch["attention_mask"].sum(axis=1) > 3).all()


def test_the_embeddings_and_first_layers_of_the_text_encoder_are_frozen(smoke_cfg):
    cfg = resolve(gb.Config, TIERS["smoke"], sets=["frozen_layers=4"])
    model = gb.build_model(cfg, {})
    layers = model_lib.transformer_layers(model.text_encoder)
    assert len(layers) == 6
    frozen = [model.text_encoder.embeddings, *layers[:4]]
    assert all(not p.requires_grad for module in frozen for p in module.parameters())
    assert all(p.requires_grad for module in layers[4:] for p in module.parameters())
    assert all(p.requires_grad for p in [*model.image_encoder.parameters(), *model.head.parameters()])
    with pytest.raises(UserError, match="frozen_layers"):
        gb.build_model(resolve(gb.Config, TIERS["smoke"], sets=["frozen_layers=7"]), {})


def test_the_weights_used_are_reported_and_missing_ones_are_user_errors(smoke_cfg, tmp_path):
    model = gb.build_model(smoke_cfg, {})
    assert model.sources["image_encoder"] == "ResNet18, random initialisation"
    assert "tiny BERT" in model.sources["text_encoder"]
    with pytest.raises(UserError, match="image_weights"):
        image_encoders.resolve(str(tmp_path / "missing.pth"))
    with pytest.raises(UserError, match="text_model"):
        model_lib.build_text_encoder(str(tmp_path / "no-model"))


def test_output_is_a_score_in_0_to_10(smoke_cfg):
    model = gb.build_model(smoke_cfg, {}).eval()
    with torch.no_grad():
        model.head[-1].bias.fill_(50.0)
        high = model(torch.zeros(3, 3, 32, 32, dtype=torch.uint8), torch.ones(3, 16, dtype=torch.long), torch.ones(3, 16, dtype=torch.long))
        model.head[-1].bias.fill_(-50.0)
        low = model(torch.zeros(3, 3, 32, 32, dtype=torch.uint8), torch.ones(3, 16, dtype=torch.long), torch.ones(3, 16, dtype=torch.long))
    assert high.shape == (3,) and torch.allclose(high, torch.full((3,), 10.0))
    assert torch.allclose(low, torch.zeros(3))


def test_smoke_model_overfits_a_few_synthetic_batches(synthetic_splits, smoke_cfg):
    torch.manual_seed(0)
    splits, _ = synthetic_splits
    batches = [batch_of(splits["train"][k : k + 8], smoke_cfg) for k in (0, 8)]
    model = gb.build_model(smoke_cfg, {}).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        epoch = []
        for batch in batches:
            value, metrics = gb.loss(model, batch, smoke_cfg)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            epoch.append(metrics["loss"])
        losses.append(np.mean(epoch))
    assert set(metrics) == {"loss", "mae"}
    assert losses[-1] < 0.4 * losses[0], losses
    one, _ = gb.loss(model, batch_of(splits["train"][:1], smoke_cfg), smoke_cfg)  # a last batch of one post
    assert torch.isfinite(one)


# ---------------------------------------------------------------- metrics and predict


def test_regression_metrics_on_a_known_case():
    true = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    predicted = np.array([2.0, 4.0, 6.0, 8.0, 100.0])  # monotone, not linear
    metrics = gb.regression_metrics(true, predicted)
    assert metrics["val/spearman"] == pytest.approx(1.0)
    assert metrics["val/pearson"] == pytest.approx(np.corrcoef(true, predicted)[0, 1]) and metrics["val/pearson"] < 0.8
    assert metrics["val/mae"] == pytest.approx((1 + 2 + 3 + 4 + 95) / 5)
    assert metrics["val/mse"] == pytest.approx((1 + 4 + 9 + 16 + 95**2) / 5)
    reversed_ = gb.regression_metrics(true, true[::-1].copy())
    assert reversed_["val/pearson"] == pytest.approx(-1.0) and reversed_["val/spearman"] == pytest.approx(-1.0)
    assert math.isnan(gb.regression_metrics(np.array([3.0]), np.array([4.0]))["val/pearson"])


def test_evaluate_reports_the_metrics_and_predicted_vs_true(synthetic_splits, smoke_cfg):
    splits, meta = synthetic_splits
    model = gb.build_model(smoke_cfg, meta).eval()
    batch = batch_of(splits["val"][:6], smoke_cfg)
    with torch.no_grad():
        metrics = gb.evaluate(model, [batch, batch], smoke_cfg)
    assert {"val/mse", "val/mae", "val/pearson", "val/spearman"} <= set(metrics)
    pairs = metrics["predicted_vs_true"]
    assert pairs.shape == (12, 2) and np.allclose(pairs[:6, 0], batch["score"].numpy())
    assert ((pairs[:, 1] >= 0) & (pairs[:, 1] <= 10)).all()
    assert metrics["val/mae"] == pytest.approx(np.abs(pairs[:, 1] - pairs[:, 0]).mean(), rel=1e-5)


def test_predict_scores_image_caption_pairs(synthetic_splits, smoke_cfg, tmp_path):
    splits, meta = synthetic_splits
    model = gb.build_model(smoke_cfg, meta)
    rows = splits["val"][:2]
    inputs = [rows[0]["image_path"], rows[0]["caption"], rows[1]["image_path"], rows[1]["caption"]]
    results = gb.predict(model, inputs, smoke_cfg, meta)
    assert [r["input"] for r in results] == [f'{r["image_path"]} "{r["caption"]}"' for r in rows]
    assert all(0 <= r["score"] <= 10 for r in results)
    with pytest.raises(UserError, match="image and caption pairs.*got 3 argument"):
        gb.predict(model, inputs[:3], smoke_cfg, meta)
    with pytest.raises(UserError, match="missing.jpg: image not found"):
        gb.predict(model, [str(tmp_path / "missing.jpg"), "a caption"], smoke_cfg, meta)
