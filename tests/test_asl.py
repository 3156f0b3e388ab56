"""The ASL trainable without Ray: features, the dataset index, the synthetic set, model, loss, predict.

Run with ``cd <repo> && .venv/bin/python -m pytest tests/test_asl.py``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from platform.config import resolve
from platform.data.stream import as_batch
from platform.errors import UserError
from search_spaces.asl import TIERS
from trainables import asl
from trainables.asl import landmarks, synthetic
from trainables.asl.model import depthwise_windowed

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "asl"
SAMPLE_PRESENT = (SAMPLE / "train.csv").is_file()
needs_sample = pytest.mark.skipif(not SAMPLE_PRESENT, reason=f"real asl-signs sample not found at {SAMPLE}")


def sample_files() -> list[Path]:
    return sorted((SAMPLE / "train_landmark_files").glob("*/*.parquet"))


@pytest.fixture(scope="module")
def smoke_cfg() -> asl.Config:
    return resolve(asl.Config, TIERS["smoke"])


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory, smoke_cfg) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYPLATFORM_CACHE", str(tmp_path_factory.mktemp("cache")))
        return asl.synthetic_dataset(smoke_cfg)


@pytest.fixture(scope="module")
def synthetic_index(synthetic_dir, smoke_cfg):
    return landmarks.read_index(str(synthetic_dir), smoke_cfg.val_fraction, smoke_cfg.seed)


def batch_of(rows: list[dict], cfg: asl.Config) -> dict[str, torch.Tensor]:
    raw = {"path": np.array([r["path"] for r in rows]), "label": np.array([r["label"] for r in rows])}
    return as_batch(asl.preprocess(raw, cfg))


def copy_of_sample(tmp_path: Path) -> Path:
    target = tmp_path / "asl"
    shutil.copytree(SAMPLE, target)
    return target


# ---------------------------------------------------------------- features


@needs_sample
def test_real_sample_files_give_744_features_per_frame_without_nan():
    for path in sample_files():
        x, mask = landmarks.extract_features(str(path), max_len=384)
        assert x.shape == (384, landmarks.NUM_FEATURES) == (384, 744)
        assert x.dtype == np.float32 and mask.shape == (384,)
        assert np.isfinite(x).all()
        real = int(mask.sum())
        assert 1 <= real <= pd.read_parquet(path, columns=["frame"])["frame"].nunique()
        assert mask[:real].all() and not x[real:].any(), "padding must follow the real frames and be zero"


@needs_sample
def test_sequences_longer_than_max_len_are_resampled_to_fill_it():
    longest = max(sample_files(), key=lambda p: pd.read_parquet(p, columns=["frame"])["frame"].nunique())
    x, mask = landmarks.extract_features(str(longest), max_len=3)
    assert x.shape == (3, 744) and mask.all()


def test_frames_without_hands_are_trimmed_and_gaps_become_zeros():
    points = np.random.default_rng(0).uniform(0.3, 0.7, (10, 543, 3)).astype(np.float32)
    points[:2, 468:489] = points[:2, 522:543] = np.nan  # no hand in the first two frames
    points[5, 468:489] = np.nan  # the left hand lost for one frame
    x, mask = landmarks.sequence_features(points, max_len=16)
    assert mask.sum() == 8 and np.isfinite(x).all()
    assert not x[3, :63].any(), "an unseen hand's positions are 0"


# ---------------------------------------------------------------- the dataset index


@needs_sample
def test_index_of_the_real_sample_has_its_two_signs_split_per_sign():
    splits, meta = landmarks.read_index(str(SAMPLE), val_fraction=0.25, seed=0)
    assert meta["classes"] == ["hello", "thankyou"]
    assert meta["num_sequences"] == 16 and meta["content_hash"].startswith("sha256:")
    assert sorted(r["label"] for r in splits["val"]) == [0, 0, 1, 1]
    assert all(Path(r["path"]).is_absolute() and Path(r["path"]).is_file() for r in splits["train"])
    again, again_meta = landmarks.read_index(str(SAMPLE), val_fraction=0.25, seed=0)
    assert again == splits and again_meta == meta


def test_stratified_split_keeps_every_class_in_both_splits():
    labels = [0] * 10 + [1] * 30 + [2] * 3
    is_val = landmarks.stratified_split(labels, 0.2, seed=1)
    held_out = np.bincount(np.array(labels)[is_val], minlength=3)
    assert held_out.tolist() == [2, 6, 1]
    assert (landmarks.stratified_split(labels, 0.2, seed=1) == is_val).all()


# ---------------------------------------------------------------- the synthetic set


def test_synthetic_set_is_in_the_kaggle_format(synthetic_dir, smoke_cfg):
    index = pd.read_csv(synthetic_dir / "train.csv")
    assert list(index.columns) == ["path", "participant_id", "sequence_id", "sign"]
    assert len(index) == smoke_cfg.synthetic_sequences and index["participant_id"].nunique() > 1
    assert index["sign"].nunique() == smoke_cfg.synthetic_signs
    table = pq.read_table(synthetic_dir / index["path"][0])
    expected = ["frame", "row_id", "type", "landmark_index", "x", "y", "z"]
    if SAMPLE_PRESENT:
        real_schema = pq.read_schema(sample_files()[0])
        assert table.schema.remove_metadata().equals(real_schema.remove_metadata())
    frames = table.to_pandas()
    assert list(frames.columns) == expected
    assert (frames.groupby("frame").size() == 543).all()
    assert frames.groupby("type")["landmark_index"].max().to_dict() == {"face": 467, "left_hand": 20, "pose": 32, "right_hand": 20}
    lengths = {pq.read_metadata(synthetic_dir / p).num_rows // 543 for p in index["path"]}
    assert len(lengths) > 1, "sequences vary in length"


def test_synthetic_set_is_written_once_and_then_reused(synthetic_dir, smoke_cfg, monkeypatch):
    monkeypatch.setenv("RAYPLATFORM_CACHE", str(synthetic_dir.parents[1]))
    written = (synthetic_dir / "train.csv").stat().st_mtime_ns

    def no_rewrite(*_):
        raise AssertionError("the cached synthetic set was written again")

    monkeypatch.setattr(synthetic, "_write_synthetic", no_rewrite)
    assert asl.synthetic_dataset(smoke_cfg) == synthetic_dir
    assert (synthetic_dir / "train.csv").stat().st_mtime_ns == written
    assert not [p for p in synthetic_dir.parent.iterdir() if p.name.startswith(".")], "no temp dir left"


# ---------------------------------------------------------------- bad inputs


def test_missing_folder_and_train_csv_columns_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        landmarks.read_index(str(tmp_path / "nowhere"))
    (tmp_path / "train.csv").write_text("path,sign\na.parquet,hello\n")
    with pytest.raises(UserError, match=r"train\.csv: missing column\(s\) participant_id, sequence_id"):
        landmarks.read_index(str(tmp_path))


@needs_sample
def test_train_csv_naming_a_missing_file_is_a_user_error(tmp_path):
    data = copy_of_sample(tmp_path)
    first = pd.read_csv(data / "train.csv")["path"][0]
    (data / first).unlink()
    with pytest.raises(UserError, match=f"missing landmark file: {first}"):
        landmarks.read_index(str(data))


def test_corrupt_and_incomplete_parquet_files_are_user_errors_naming_them(tmp_path):
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"this is not parquet")
    with pytest.raises(UserError, match=f"{corrupt}: cannot read landmark parquet"):
        landmarks.extract_features(str(corrupt), 8)
    with pytest.raises(UserError, match="missing.parquet: cannot read"):
        landmarks.extract_features(str(tmp_path / "missing.parquet"), 8)
    incomplete = tmp_path / "incomplete.parquet"
    pd.DataFrame({"frame": [0], "type": ["face"], "x": [0.5]}).to_parquet(incomplete)
    with pytest.raises(UserError, match=f"{incomplete}: landmark file lacks column\\(s\\) landmark_index, y, z"):
        landmarks.extract_features(str(incomplete), 8)


def test_sequence_without_hands_is_a_user_error_naming_it(tmp_path):
    landmarks = np.full((3, 543, 3), 0.5)
    landmarks[:, 468:489] = landmarks[:, 522:543] = np.nan
    handless = tmp_path / "handless.parquet"
    pq.write_table(synthetic._landmark_table(landmarks, first_frame=0), handless)
    with pytest.raises(UserError, match=f"{handless}: no hand landmarks"):
        asl.preprocess({"path": np.array([str(handless)]), "label": np.array([0])}, asl.Config(max_len=8))


def _landmark_frame() -> pd.DataFrame:
    """One frame of the Kaggle layout, every landmark seen."""
    return synthetic._landmark_table(np.full((1, 543, 3), 0.5), first_frame=0).to_pandas()


@pytest.mark.parametrize(
    ("column", "change", "expected"),
    [
        ("x", lambda values: values.astype(str), "numbers"),
        ("frame", lambda values: values.astype(float), "integers"),
        ("landmark_index", lambda values: values.astype(str), "integers"),
        ("type", lambda values: values.astype("category").cat.codes, "text"),
    ],
)
def test_a_landmark_column_of_the_wrong_type_is_a_user_error_naming_file_and_column(tmp_path, column, change, expected):
    table = _landmark_frame()
    table[column] = change(table[column])
    path = tmp_path / "retyped.parquet"
    table.to_parquet(path)
    with pytest.raises(UserError, match=re.escape(f"{path}: landmark column {column!r} holds ") + f".*expected {expected}"):
        asl.preprocess({"path": np.array([str(path)]), "label": np.array([0])}, asl.Config(max_len=8))


def test_a_categorical_type_column_and_float32_coordinates_read(tmp_path):
    table = _landmark_frame().astype({"type": "category", "x": "float32"})
    table.to_parquet(tmp_path / "narrow.parquet")
    assert landmarks.read_features(str(tmp_path / "narrow.parquet"), 8).shape == (1, landmarks.NUM_FEATURES)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"path,participant_id,sequence_id,sign\n", "a header but no rows"),
        (b"path,participant_id,sequence_id,sign\na.parquet,1,2,caf\xe9\n", "not UTF-8 text (byte 0xe9 on line 2)"),
    ],
)
def test_an_empty_header_only_or_non_utf8_train_csv_is_a_user_error_naming_it(tmp_path, content, message):
    (tmp_path / "train.csv").write_bytes(content)
    with pytest.raises(UserError, match=re.escape(f"{tmp_path}/train.csv: {message}")):
        landmarks.read_index(str(tmp_path))


@pytest.mark.parametrize("path", ["../outside.parquet", "train_landmark_files/../../outside.parquet", "ABSOLUTE"])
def test_a_train_csv_path_outside_the_data_folder_is_a_user_error_naming_it(tmp_path, path):
    outside = tmp_path / "outside.parquet"
    _landmark_frame().to_parquet(outside)
    path = str(outside) if path == "ABSOLUTE" else path
    folder = tmp_path / "data"
    folder.mkdir()
    index = {"path": [path, path], "participant_id": [1, 1], "sequence_id": [1, 2], "sign": ["a", "b"]}
    pd.DataFrame(index).to_csv(folder / "train.csv", index=False)
    with pytest.raises(UserError, match=re.escape(f"{folder}/train.csv: path {path!r} points outside the data folder")):
        landmarks.read_index(str(folder))


# ---------------------------------------------------------------- model, loss, schedule, predict


def test_full_tier_model_has_about_1_97m_parameters():
    cfg = resolve(asl.Config, TIERS["full"])
    model = asl.build_model(cfg, {"classes": [f"sign{i}" for i in range(250)]})
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 1.97e6) / 1.97e6 < 0.10, count


def test_full_tier_is_the_seed_training_recipe():
    cfg = resolve(asl.Config, TIERS["full"])
    recipe = (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs, cfg.patience, cfg.label_smoothing, cfg.amp)
    assert recipe == (4e-4, 0.005, 32, 300, 20, 0.05, True)
    schedule = (cfg.scheduler, cfg.restart_period, cfg.restart_mult, cfg.min_lr_ratio)
    assert schedule == ("cosine_restarts", 50, 2, 0.01)
    assert (cfg.dim, cfg.max_len, cfg.kernel_size, cfg.tcn_dilations, cfg.heads) == (192, 384, 17, (1, 2, 4), 8)


def test_smoke_model_overfits_a_few_synthetic_batches(synthetic_index, smoke_cfg):
    torch.manual_seed(0)
    splits, meta = synthetic_index
    batch = batch_of(splits["train"][:16], smoke_cfg)
    model = asl.build_model(smoke_cfg, meta)
    asl.on_epoch_start(model, 0, smoke_cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(12):
        value, metrics = asl.loss(model, batch, smoke_cfg)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(metrics["loss"])
    assert set(metrics) == {"loss", "acc"}
    assert losses[-1] < 0.6 * losses[0], losses


def test_evaluate_reports_accuracy_loss_and_confusion(synthetic_index, smoke_cfg):
    splits, meta = synthetic_index
    model = asl.build_model(smoke_cfg, meta).eval()
    with torch.no_grad():
        metrics = asl.evaluate(model, [batch_of(splits["val"][:5], smoke_cfg)] * 2, smoke_cfg)
    assert {"val/loss", "val/acc", "confusion_matrix"} <= set(metrics) and "val/top5" not in metrics
    assert metrics["confusion_matrix"].shape == (4, 4) and metrics["confusion_matrix"].sum() == 10
    assert 0.0 <= metrics["val/acc"] <= 1.0


def test_predict_gives_top_signs_with_probabilities(synthetic_index, smoke_cfg):
    splits, meta = synthetic_index
    paths = [r["path"] for r in splits["val"][:3]]
    results = asl.predict(asl.build_model(smoke_cfg, meta), paths, smoke_cfg, meta)
    assert [r["input"] for r in results] == paths
    for result in results:
        probs = [t["prob"] for t in result["top"]]
        assert len(probs) == 4 and sum(probs) <= 1 + 1e-5 and probs == sorted(probs, reverse=True)
        assert {t["label"] for t in result["top"]} == set(meta["classes"])


def test_a_prediction_over_the_sequences_own_frames_is_the_padded_ones(synthetic_index):
    """Full model, real files: alone, a sequence runs over its own frames; in a batch (padded to the
    longest) or padded to max_len (the old path) with its mask, the probabilities are the same."""
    cfg = asl.Config()
    _, meta = synthetic_index
    torch.manual_seed(0)
    model = asl.build_model(cfg, meta).eval()
    files = sorted(map(str, sample_files()), key=lambda f: len(landmarks.read_features(f, cfg.max_len)))
    short, long = files[0], files[-1]
    features = torch.from_numpy(landmarks.read_features(short, cfg.max_len))
    padded, mask = (torch.from_numpy(a) for a in landmarks.extract_features(short, cfg.max_len))
    with torch.no_grad():
        own = model(features[None], torch.ones(1, len(features), dtype=torch.bool)).softmax(dim=1)
        old = model(padded[None], mask[None]).softmax(dim=1)
    assert len(features) < cfg.max_len and torch.allclose(own, old, atol=1e-5)
    alone = asl.predict(model, [short], cfg, meta)[0]["top"]
    batched = asl.predict(model, [short, long], cfg, meta)[0]["top"]
    assert [t["label"] for t in alone] == [t["label"] for t in batched]
    assert [t["prob"] for t in alone] == pytest.approx([t["prob"] for t in batched], abs=1e-5)


@pytest.mark.parametrize("kernel, dilation", [(17, 1), (17, 4), (4, 2), (1, 1)])
def test_the_windowed_depthwise_convolution_of_short_inputs_is_the_convolution(kernel, dilation):
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 6, kernel, padding="same", dilation=dilation, groups=6)
    x = torch.randn(2, 6, 9)
    assert torch.allclose(depthwise_windowed(x, conv), conv(x), atol=1e-6)


def test_dropout_schedule_rises_then_late_dropout_switches_on():
    cfg = asl.Config()
    model = asl.build_model(resolve(asl.Config, TIERS["smoke"]), {"classes": ["a", "b"]})
    seen = {}
    for epoch in (100, 0, 15, 30, 59, 60):
        asl.on_epoch_start(model, epoch, cfg)
        seen[epoch] = (round(model.stage_dropout.p, 6), model.late_dropout.p)
    assert seen == {0: (0.1, 0.0), 15: (0.35, 0.0), 30: (0.6, 0.0), 59: (0.6, 0.0), 60: (0.6, 0.8), 100: (0.6, 0.8)}
