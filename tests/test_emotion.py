"""The emotion trainable: MELD CSVs and clips, the synthetic set, decoding, model, metrics, and one run end to end.

Run with ``cd <repo> && .venv/bin/python -m pytest -q tests/test_emotion.py``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_command, shared_dataset

from platform.config import resolve
from platform.errors import UserError
from search_spaces.emotion import SPACE, TIERS
from trainables import emotion
from trainables.emotion import data, media, synthetic


@pytest.fixture(scope="module")
def smoke_cfg() -> emotion.Config:
    return resolve(emotion.Config, TIERS["smoke"])


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory, smoke_cfg) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYPLATFORM_CACHE", str(tmp_path_factory.mktemp("cache")))
        return emotion.synthetic_dataset(smoke_cfg)


@pytest.fixture(scope="module")
def synthetic_rows(synthetic_dir) -> dict[str, list[dict]]:
    return data.read_meld(str(synthetic_dir))[0]


def raw_batch(rows: list[dict]) -> dict[str, np.ndarray]:
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}


def batch_of(rows: list[dict], cfg) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(value) for key, value in emotion.preprocess(raw_batch(rows), cfg).items()}


def clip_for(folder: Path, tone: int, colour: int) -> str:
    path = folder / f"tone{tone}-colour{colour}.mp4"
    synthetic.write_clip(path, np.random.default_rng(0), tone, colour)
    return str(path)


# ---------------------------------------------------------------- reading MELD


def test_the_real_dev_csv_reads_with_every_clip_missing_and_counted(tmp_path):
    dev = shared_dataset("meld") / "dev_sent_emo.csv"
    for name in ("train_sent_emo.csv", "dev_sent_emo.csv"):  # the sample has no train CSV: dev stands in
        shutil.copy(dev, tmp_path / name)
    splits, meta = data.read_meld(str(tmp_path))
    assert set(splits) == {"train", "val"} and meta["split_sizes"] == {"train": 1109, "val": 1109}
    assert meta["missing_clips"] == {"train": 1109, "val": 1109}
    assert all(row["clip"] == "" for row in splits["val"])
    first = splits["val"][0]
    assert first["utterance"] == "Oh my God, he's lost it. He's totally lost it."  # smart quotes made plain
    assert (data.EMOTIONS[first["emotion"]], data.SENTIMENTS[first["sentiment"]]) == ("sadness", "negative")
    assert data.class_counts(splits["val"], "emotion", data.EMOTIONS)[data.EMOTIONS.index("disgust")] == 22
    batch = emotion.preprocess(raw_batch(splits["val"][:3]), resolve(emotion.Config, TIERS["smoke"]))
    assert batch["has_audio"].tolist() == batch["has_video"].tolist() == [0.0, 0.0, 0.0]
    assert not batch["mel"].any() and not batch["frames"].any() and batch["attention_mask"].sum() > 10


def test_cp1252_csvs_with_mojibake_and_clips_in_the_data_folder_read(tmp_path, synthetic_dir):
    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\r\n"
    # Encoded as cp1252: a smart quote (byte 0x92) in one row, UTF-8 read as cp1252 in the other.
    lines = ['1,"You\u2019re a genius!",Chandler,Joy,positive,3,1\r\n',
             '2,"Youâ€™re late.",Ross,anger,negative,3,2\r\n']
    for name in data.CSV_FILES.values():
        (tmp_path / name).write_bytes((header + "".join(lines)).encode("cp1252"))
    shutil.copy(next((synthetic_dir / "train_splits").glob("*.mp4")), tmp_path / "dia3_utt1.mp4")
    splits, meta = data.read_meld(str(tmp_path))
    assert [row["utterance"] for row in splits["train"]] == ["You're a genius!", "You're late."]
    assert splits["test"][0]["clip"] == str(tmp_path / "dia3_utt1.mp4") and splits["test"][1]["clip"] == ""
    assert meta["missing_clips"] == {"train": 1, "val": 1, "test": 1}
    assert splits["train"][0]["emotion"] == data.EMOTIONS.index("joy")


def test_missing_files_columns_and_labels_are_user_errors_naming_the_file(tmp_path):
    with pytest.raises(UserError, match="data folder not found"):
        data.read_meld(str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match=r"train_sent_emo\.csv: not found"):
        data.read_meld(str(tmp_path))
    (tmp_path / "train_sent_emo.csv").write_text("Utterance,Emotion\nhi,joy\n")
    with pytest.raises(UserError, match=r"train_sent_emo\.csv: missing column\(s\) Sentiment, Dialogue_ID"):
        data.read_meld(str(tmp_path))
    (tmp_path / "train_sent_emo.csv").write_text("Utterance,Emotion,Sentiment,Dialogue_ID,Utterance_ID\nhi,bored,neutral,0,0\n")
    with pytest.raises(UserError, match=r"train_sent_emo\.csv line 2: Emotion 'bored' is not one of"):
        data.read_meld(str(tmp_path))


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file"),
    (b"  \n\n", "empty file"),
    (b"Utterance,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n", "a header but no rows"),
])
def test_an_empty_or_header_only_csv_is_a_user_error_naming_it(tmp_path, content, message):
    header = "Utterance,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"
    (tmp_path / "train_sent_emo.csv").write_text(header + "hi,joy,positive,0,0\n")
    (tmp_path / "dev_sent_emo.csv").write_bytes(content)
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'dev_sent_emo.csv'}: {message}")):
        data.read_meld(str(tmp_path))


# ---------------------------------------------------------------- the synthetic set and decoding


def test_synthetic_set_is_in_the_meld_layout_with_real_clips(synthetic_dir, synthetic_rows):
    for split, name in data.CSV_FILES.items():
        frame = pd.read_csv(synthetic_dir / name)
        assert list(frame.columns) == list(data.CSV_COLUMNS) and set(frame["Emotion"]) <= set(data.EMOTIONS)
        clips = sorted((synthetic_dir / data.CLIP_FOLDERS[split][0]).glob("dia*_utt*.mp4"))
        assert 0 < len(clips) <= len(frame)
    assert sum(len(rows) for rows in synthetic_rows.values()) == 60
    with av.open(str(next(row["clip"] for row in synthetic_rows["train"] if row["clip"]))) as container:
        assert container.streams.video and container.streams.audio
        assert container.streams.audio[0].codec_context.name == "aac"
    assert any(not row["clip"] for rows in synthetic_rows.values() for row in rows), "some rows lack a clip, as in MELD"


def test_the_synthetic_set_is_written_once_and_then_reused(synthetic_dir, smoke_cfg, monkeypatch):
    monkeypatch.setenv("RAYPLATFORM_CACHE", str(synthetic_dir.parents[1]))
    monkeypatch.setattr(synthetic, "_write_synthetic", lambda *_: pytest.fail("written again"))
    assert emotion.synthetic_dataset(smoke_cfg) == synthetic_dir


def test_mel_and_frames_carry_the_tone_and_the_colour(tmp_path, smoke_cfg):
    shape = emotion.clip_shape(smoke_cfg)
    low, high = (media.decode_clip(clip_for(tmp_path, tone, tone), shape) for tone in (0, 6))
    assert low.mel.shape == (32, shape.mel_steps) and low.mel.dtype == np.float16 and low.has_audio
    assert low.frames.shape == (2, 3, 32, 32) and low.frames.dtype == np.uint8 and low.has_video
    # The tone's band is the loudest, and a higher tone sits in a higher band.
    assert high.mel.astype(np.float32).mean(axis=1).argmax() > low.mel.astype(np.float32).mean(axis=1).argmax() + 5
    anger = media.decode_clip(clip_for(tmp_path, 0, data.EMOTIONS.index("anger")), shape).frames.astype(int)
    centre = anger[:, :, 12:20, 12:20].mean(axis=(0, 2, 3))
    assert centre[0] > centre[2] + 100, "the square is red"


def test_a_missing_or_broken_clip_is_masked_in_preprocess_and_an_error_in_predict(tmp_path, synthetic_rows, smoke_cfg):
    broken = tmp_path / "dia0_utt9.mp4"
    broken.write_bytes(b"not an mp4")
    rows = [{**synthetic_rows["train"][0], "clip": clip} for clip in ("", str(broken))]
    batch = emotion.preprocess(raw_batch(rows), smoke_cfg)
    assert batch["has_audio"].tolist() == batch["has_video"].tolist() == [0.0, 0.0]
    assert not batch["mel"].any() and not batch["frames"].any()
    assert all(value.dtype.kind in "iuf" for value in batch.values()), "only numeric columns reach the loop"
    model = emotion.build_model(smoke_cfg, {})
    with pytest.raises(UserError, match="not a readable clip"):
        emotion.predict(model, ["hello"], smoke_cfg, {}, clip=str(broken))
    with pytest.raises(UserError, match="clip not found"):
        emotion.predict(model, ["hello"], smoke_cfg, {}, clip=str(tmp_path / "gone.mp4"))


# ---------------------------------------------------------------- imbalance, model, metrics


def test_class_weights_and_oversampling():
    assert data.class_weights([6, 3, 0]) == [pytest.approx(0.5), pytest.approx(1.0), 1.0]
    rows = [{"emotion": 0}] * 6 + [{"emotion": 1}] * 2
    balanced = data.oversample(rows, "emotion", seed=0)
    assert sorted(row["emotion"] for row in balanced) == [0] * 6 + [1] * 6
    assert balanced == data.oversample(rows, "emotion", seed=0)


@pytest.mark.parametrize(("sets", "encoders", "heads"), [
    (["modalities=text", "tasks=sentiment"], {"text"}, {"sentiment": 3}),
    (["modalities=text,audio", "fusion=concat"], {"text", "audio"}, {"emotion": 7, "sentiment": 3}),
    (["fusion=attention"], {"text", "audio", "video"}, {"emotion": 7, "sentiment": 3}),
])
def test_the_configured_modalities_and_heads_are_built(synthetic_rows, smoke_cfg, sets, encoders, heads):
    cfg = resolve(emotion.Config, TIERS["smoke"], sets=sets)
    model = emotion.build_model(cfg, {}).eval()
    assert set(model.encoders) == encoders
    with torch.no_grad():
        logits = model(batch_of(synthetic_rows["val"][:5], cfg))
    assert {task: tuple(value.shape) for task, value in logits.items()} == {t: (5, n) for t, n in heads.items()}
    with pytest.raises(UserError, match="modalities"):
        emotion.build_model(resolve(emotion.Config, TIERS["smoke"], sets=["modalities=audio"]), {})


def test_modality_dropout_masks_only_in_training_and_never_a_whole_row(synthetic_rows):
    torch.manual_seed(0)
    cfg = resolve(emotion.Config, TIERS["smoke"], sets=["modality_dropout=0.9"])
    model = emotion.build_model(cfg, {})
    batch = {"input_ids": torch.zeros(64, 4, dtype=torch.long), "has_audio": torch.ones(64), "has_video": torch.zeros(64)}
    present = model.train().presence(batch)
    assert (present.sum(dim=1) >= 1).all() and (present[:, 2] == 0).all() and present[:, 1].mean() < 0.3
    assert model.eval().presence(batch).tolist() == [[1.0, 1.0, 0.0]] * 64


def test_the_smoke_model_overfits_a_few_batches(synthetic_rows, smoke_cfg):
    torch.manual_seed(0)
    cfg = resolve(emotion.Config, TIERS["smoke"], sets=["dropout=0", "modality_dropout=0", "fusion=concat"])
    batches = [batch_of(synthetic_rows["train"][k : k + 8], cfg) for k in (0, 8)]
    model = emotion.build_model(cfg, {}).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        for batch in batches:
            value, metrics = emotion.loss(model, batch, cfg)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
        losses.append(metrics["loss"])
    assert set(metrics) == {"loss", "acc", "sentiment_acc"}
    assert losses[-1] < 0.4 * losses[0], losses


def test_metrics_and_the_confusion_matrix_on_a_known_case(synthetic_rows, smoke_cfg):
    true, predicted = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0])
    metrics = emotion.classification_metrics(true, predicted, data.EMOTIONS, "val/")
    assert metrics["val/acc"] == pytest.approx(0.6)
    assert metrics["val/precision/joy"] == pytest.approx(2 / 3) and metrics["val/recall/joy"] == 1.0
    assert metrics["val/recall/neutral"] == 0.5 and metrics["val/recall/surprise"] == 0.0
    # F1: neutral 0.5, joy 0.8, surprise 0; weighted by support 2, 2, 1; macro over all 7 classes.
    assert metrics["val/weighted_f1"] == pytest.approx((2 * 0.5 + 2 * 0.8) / 5)
    assert metrics["val/macro_f1"] == pytest.approx((0.5 + 0.8) / 7)
    matrix = emotion.confusion(true, predicted, data.EMOTIONS)
    assert matrix.shape == (7, 7) and matrix[0].tolist()[:3] == [1, 1, 0] and matrix[2, 0] == 1

    model = emotion.build_model(smoke_cfg, {}).eval()
    batch = batch_of(synthetic_rows["val"][:6], smoke_cfg)
    with torch.no_grad():
        evaluated = emotion.evaluate(model, [batch, batch], smoke_cfg)
    assert np.asarray(evaluated["confusion_matrix"]).sum() == 12 and len(evaluated["predictions"]) == 12
    assert {"val/weighted_f1", "val/macro_f1", "val/recall/fear", "val/sentiment/weighted_f1"} <= set(evaluated)
    assert evaluated["predictions"][0]["id"] == f"dia{synthetic_rows['val'][0]['dialogue_id']}_utt{synthetic_rows['val'][0]['utterance_id']}"


def test_every_tier_and_search_key_is_a_config_field():
    for tier in TIERS.values():
        resolve(emotion.Config, tier)
    assert set(SPACE) <= set(emotion.Config.__dataclass_fields__)
    assert set(emotion.PREPROCESS_KEYS) <= set(emotion.Config.__dataclass_fields__)
    assert emotion.METRIC == ("val/weighted_f1", "max")


# ---------------------------------------------------------------- end to end


def test_smoke_run_end_to_end_reuses_its_preprocessing_and_predicts(ray_address, synthetic_cache, tmp_path):
    first = run_command("run", "emotion", "--tier", "smoke", "--storage", str(tmp_path), "--name", "e2e", address=ray_address)
    assert first.returncode == 0, first.stderr[-4000:]
    run_dir = tmp_path / "emotion" / "e2e"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and {"test/weighted_f1", "test/acc"} <= set(manifest["test_metrics"])
    assert set(manifest["data"]["missing_clips"]) == {"train", "val", "test"}
    assert sum(manifest["data"]["missing_clips"].values()) > 0
    for picture in ("confusion_matrix.png", "test_confusion_matrix.png"):
        assert (run_dir / picture).read_bytes()[:4] == b"\x89PNG", picture
    assert (run_dir / "best_model.pt").stat().st_size > 0

    cached = {split: Path(s["uri"]) for split, s in manifest["data"]["store"].items()}
    written = {path: path.stat().st_mtime_ns for folder in cached.values() for path in folder.iterdir()}
    assert written and set(cached) == {"train", "val", "test"}
    second = run_command("run", "emotion", "--tier", "smoke", "--set", "epochs=1", "--storage", str(tmp_path),
                         "--name", "again", address=ray_address)
    assert second.returncode == 0, second.stderr[-4000:]
    again = json.loads((tmp_path / "emotion" / "again" / "manifest.json").read_text())
    assert again["data"]["store"] == manifest["data"]["store"]
    assert {path: path.stat().st_mtime_ns for folder in cached.values() for path in folder.iterdir()} == written

    clip = next((synthetic_cache / "emotion").glob("synthetic-*/train_splits/*.mp4"))
    predicted = run_command("predict", str(run_dir), "I am so happy today", "--clip", str(clip))
    assert predicted.returncode == 0, predicted.stderr[-4000:]
    assert "I am so happy today" in predicted.stdout and "sentiment:" in predicted.stdout
    assert any(name in predicted.stdout for name in data.EMOTIONS)
    assert "text+audio+video" in predicted.stdout
