"""The captioning trainable's data: both Flickr8k caption layouts, split lists, bad folders and files
as user errors naming them, the real sample, the vocabulary and padded references.

    .venv/bin/python -m pytest tests/test_captioning_data.py
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from flickr_folders import CAPTIONS, jpeg, torch_batch, write_folder
from helpers import shared_dataset

from platform.errors import UserError
from trainables import captioning as cap
from trainables.captioning import data, vocab


def table(rows: dict[str, list[dict]]) -> dict[str, list[tuple]]:
    """Images and their captions by split, without the paths (which differ between two folders)."""
    return {split: [(r["image"], r["captions"]) for r in split_rows] for split, split_rows in rows.items()}


def test_both_caption_layouts_read_to_the_same_table(tmp_path):
    csv_rows, csv_meta = data.read_flickr(str(write_folder(tmp_path / "csv", "csv")), 0.25, 0.25, seed=1)
    token_rows, token_meta = data.read_flickr(
        str(write_folder(tmp_path / "token", "token", images="Flicker8k_Dataset")), 0.25, 0.25, seed=1
    )
    assert table(csv_rows) == table(token_rows)
    assert sorted(r["image"] for split in csv_rows.values() for r in split) == sorted(CAPTIONS)
    assert {s: len(r) for s, r in csv_rows.items()} == {"train": 2, "val": 1, "test": 1}
    assert csv_meta["captions"] == token_meta["captions"] == 9 and csv_meta["split_source"] == "seeded split (seed 1)"
    first = csv_rows["train"][0]
    assert first["captions"] == CAPTIONS[first["image"]] and Path(first["image_path"]).is_file()


def test_the_real_flickr8k_sample_reads_with_five_captions_an_image():
    folder = shared_dataset("flickr8k")
    rows, meta = data.read_flickr(str(folder))
    every = [row for split in rows.values() for row in split]
    assert len(every) == 40 and all(len(row["captions"]) == 5 for row in every)
    assert meta["captions"] == 200 and meta["skipped_captions"]["count"] == 0
    assert all(Path(row["image_path"]).is_file() for row in every)
    cfg = cap.Config(data_dir=str(folder), image_weights="none", image_size=64, vocab_size=50, max_len=10)
    items, meta = cap.raw_rows(cfg)  # reads only: nothing is written into the sample
    assert len(meta["vocabulary"]) == 50 and items["train"][0]["captions"].shape == (5, 12)
    batch = torch_batch(items["val"][:2], cfg)
    assert batch["features"].shape == (2, 512) and torch.isfinite(batch["features"]).all()


def test_standard_split_lists_are_honoured(tmp_path):
    root = write_folder(tmp_path, "token")
    (root / "Flickr_8k.trainImages.txt").write_text("a.jpg\nc.jpg\n")
    (root / "Flickr_8k.devImages.txt").write_text("d.jpg\n")
    (root / "Flickr_8k.testImages.txt").write_text("b.jpg\n")
    rows, meta = data.read_flickr(str(root))
    assert {s: [r["image"] for r in split] for s, split in rows.items()} == {
        "train": ["a.jpg", "c.jpg"],
        "val": ["d.jpg"],
        "test": ["b.jpg"],
    }
    assert meta["split_source"] == "standard split lists"


def test_captions_of_missing_images_are_skipped_and_counted(tmp_path):
    root = write_folder(tmp_path, "csv")
    (root / "Images" / "b.jpg").unlink()
    rows, meta = data.read_flickr(str(root), 0.34, 0.0)
    assert "b.jpg" not in [r["image"] for split in rows.values() for r in split]
    assert meta["skipped_captions"] == {"count": 2, "images": 1, "examples": ["b.jpg"]}


def test_bad_folders_and_lines_are_user_errors_naming_the_file(tmp_path):
    with pytest.raises(UserError, match="nowhere: data folder not found"):
        data.read_flickr(str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="no captions file"):
        data.read_flickr(str(tmp_path))
    root = write_folder(tmp_path / "bad", "token")
    (root / "Flickr8k.token.txt").write_text("a.jpg#0\tA dog\na.jpg A dog without a tab\n")
    with pytest.raises(UserError, match=r"Flickr8k\.token\.txt line 2: expected"):
        data.read_flickr(str(root))
    (root / "Flickr8k.token.txt").unlink()
    (root / "captions.txt").write_text("file,text\na.jpg,A dog\n")
    with pytest.raises(UserError, match=r"captions\.txt: the first line must be the header"):
        data.read_flickr(str(root))
    shutil.rmtree(root / "Images")
    with pytest.raises(UserError, match="no image folder"):
        data.read_flickr(str(root))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("captions.txt", b"", "empty file"),
        ("Flickr8k.token.txt", "a.jpg#0\tA d\u00f6g\n".encode("latin-1"), "not UTF-8 text (byte 0xf6 on line 1)"),
        ("Flickr_8k.trainImages.txt", b"a.jpg\nb\xe9.jpg\n", "not UTF-8 text (byte 0xe9 on line 2)"),
    ],
)
def test_an_empty_or_non_utf8_text_file_is_a_user_error_naming_it(tmp_path, name, content, message):
    root = write_folder(tmp_path, "token")
    (root / "Flickr_8k.devImages.txt").write_text("d.jpg\n")
    (root / name).write_bytes(content)
    if name == "captions.txt":
        (root / "Flickr8k.token.txt").unlink()
    with pytest.raises(UserError, match=re.escape(f"{root / name}: {message}")):
        data.read_flickr(str(root))


@pytest.mark.parametrize("image", ["../outside.jpg", "../../outside.jpg", "ABSOLUTE"])
def test_an_image_name_outside_the_image_folder_is_a_user_error_naming_it(tmp_path, image):
    jpeg(tmp_path / "outside.jpg")
    jpeg(tmp_path / "data" / "outside.jpg")
    image = str(tmp_path / "outside.jpg") if image == "ABSOLUTE" else image
    root = write_folder(tmp_path / "data", "csv", captions={**CAPTIONS, image: ["A picture from elsewhere"]})
    with pytest.raises(UserError, match=re.escape(f"{root / 'captions.txt'}: path {image!r} points outside the data folder")):
        data.read_flickr(str(root))


def test_vocabulary_size_and_caption_length_follow_the_config(tmp_path):
    root = write_folder(tmp_path, "csv")
    cfg = cap.Config(data_dir=str(root), vocab_size=9, max_len=3, val_fraction=0.25, test_fraction=0.25, image_weights="none")
    items, meta = cap.raw_rows(cfg)
    assert len(meta["vocabulary"]) == 9 and meta["vocabulary"][:4] == list(vocab.SPECIALS)
    train_words = {w for r in items["train"] for c in CAPTIONS[Path(r["image_path"]).name] for w in data.normalize(c).split()}
    assert set(meta["vocabulary"][4:]) <= train_words, "built from the training captions only"
    captions = items["train"][0]["captions"]
    assert captions.shape == (3, 3 + 2) and captions.dtype == np.int64  # 3 references at most (a.jpg)
    assert (captions[:, 0][captions[:, 0] != vocab.PAD] == vocab.START).all()
    ids = [vocab.START, *(int(t) for t in captions[0, 1:4]), vocab.END]
    assert captions[0].tolist() == ids, "cut at max_len words, then <end>"
    assert [r["eval_index"] for r in items["train"]] == [-1, -1]
    assert sorted(r["eval_index"] for s in ("val", "test") for r in items[s]) == [0, 1]
    assert [e["references"] for e in meta["eval_images"]] == [
        [data.normalize(c) for c in CAPTIONS[e["image"]]] for e in meta["eval_images"]
    ]


def test_missing_references_are_padding_the_loss_skips(tmp_path):
    cfg = cap.Config(
        data_dir=str(write_folder(tmp_path, "csv")),
        vocab_size=40,
        max_len=6,
        val_fraction=0.25,
        test_fraction=0.25,
        image_weights="none",
        image_size=32,
        embed_dim=8,
        hidden_dim=16,
        dropout=0.0,
    )
    items, meta = cap.raw_rows(cfg)
    two_refs = [r for split in items.values() for r in split if Path(r["image_path"]).name in ("b.jpg", "c.jpg")]
    padded = torch_batch(two_refs, cfg)
    assert padded["captions"].shape[1] == 3 and (padded["captions"][:, 2] == vocab.PAD).all()
    torch.manual_seed(0)
    model = cap.build_model(cfg, meta).eval()
    with_padding, _ = cap.loss(model, padded, cfg)
    without, _ = cap.loss(model, {**padded, "captions": padded["captions"][:, :2]}, cfg)
    assert torch.isfinite(with_padding) and with_padding.item() == pytest.approx(without.item())
