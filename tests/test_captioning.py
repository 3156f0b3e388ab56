"""The captioning trainable: unreadable images, the synthetic set, decoding, BLEU, and one run (its
data, layouts and vocabulary: tests/test_captioning_data.py).

Run with ``cd <repo> && .venv/bin/python -m pytest tests/test_captioning.py`` (unit tests without
Ray; the last test runs ``python -m platform.run captioning --tier smoke`` twice and predicts).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from flickr_folders import torch_batch
from helpers import png_header_only, run_command, shared_dataset
from PIL import Image
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from platform import registry
from platform.config import resolve
from platform.errors import UserError
from platform.train.loop import build_optimizer, build_scheduler
from search_spaces.captioning import ALIASES, TIERS
from trainables import captioning as cap
from trainables.captioning import data, synthetic, vocab
from trainables.captioning.metrics import caption_metrics


@pytest.fixture(scope="module")
def smoke_cfg() -> cap.Config:
    return resolve(cap.Config, TIERS["smoke"])


@pytest.fixture(scope="module")
def smoke_rows(smoke_cfg):
    """Rows and meta of the smoke tier's synthetic set (written in the session's cache)."""
    return cap.raw_rows(smoke_cfg)


# ---------------------------------------------------------------- images a batch cannot read


def test_an_unreadable_image_is_a_user_error_naming_it(tmp_path, smoke_cfg, smoke_rows):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    rows = [{**smoke_rows[0]["train"][0], "image_path": str(broken)}]
    with pytest.raises(UserError, match=f"{broken}: not a readable image"):
        torch_batch(rows, smoke_cfg)


def test_a_decompression_bomb_is_a_user_error_naming_it(tmp_path, smoke_cfg, smoke_rows):
    bomb = png_header_only(tmp_path / "bomb.png", 9_000, 9_000)
    rows = [{**smoke_rows[0]["train"][0], "image_path": str(bomb)}]
    with pytest.raises(UserError, match=re.escape(f"{bomb}: 9000x9000 pixels, more than the 64,000,000 pixels")):
        torch_batch(rows, smoke_cfg)


# ---------------------------------------------------------------- synthetic set


def test_synthetic_set_is_in_the_flickr8k_layout_and_written_once(smoke_cfg, monkeypatch):
    folder = cap.synthetic_dataset(smoke_cfg)
    table, _ = data.read_captions(folder / "captions.txt")
    assert (folder / "captions.txt").read_text().startswith("image,caption\n")
    assert len(table) == smoke_cfg.synthetic_images and all(len(c) == 5 and len(set(c)) == 5 for c in table.values())
    with Image.open(folder / "Images" / next(iter(table))) as image:
        assert image.format == "JPEG" and image.size == (synthetic.IMAGE_PIXELS,) * 2
    first = table[next(iter(table))]
    colours = [c for c in synthetic.COLOURS if all(c in caption for caption in first)]
    assert len(colours) == 1, "every caption of an image names its colour"
    written = (folder / "captions.txt").stat().st_mtime_ns
    monkeypatch.setattr(synthetic, "_write_synthetic", lambda *_: pytest.fail("written again"))
    assert cap.synthetic_dataset(smoke_cfg) == folder and (folder / "captions.txt").stat().st_mtime_ns == written


# ---------------------------------------------------------------- decoding, metrics, training


def test_the_captioner_decodes_through_the_shared_search(smoke_cfg, smoke_rows):
    """Width 1 is greedy decoding over the model's own step; wider beams keep the shared search's
    rules (``tests/test_textgen.py`` checks the search itself against exhaustive search)."""
    torch.manual_seed(3)
    model = cap.build_model(smoke_cfg, smoke_rows[1]).eval()
    features = torch.randn(6, 512)
    with torch.no_grad():
        greedy = model.caption(features, 1, 8)
        hidden, cell, image = model.start_state(features[:1])
        state, tokens, chosen = (hidden, cell), torch.tensor([vocab.START]), []
        for _ in range(9):  # an argmax at each step, never <pad> or <start>, no <end> first
            output, state = model.lstm(torch.cat([model.embed(tokens), image], dim=-1)[:, None], state)
            logits = model.out(output[:, 0])
            logits[:, [vocab.PAD, vocab.START, vocab.UNK] + ([vocab.END] if not chosen else [])] = float("-inf")
            if len(chosen) == 8:
                logits[:, [k for k in range(logits.shape[1]) if k != vocab.END]] = float("-inf")
            tokens = logits.argmax(dim=-1)
            chosen.append(int(tokens))
            if chosen[-1] == vocab.END:
                break
        beams = [model.caption(features, 4, 8, alpha) for alpha in (0.0, 1.0)]
    assert greedy[0, : len(chosen)].tolist() == chosen
    for beam in beams:
        assert beam.shape[0] == 6 and beam.shape[1] <= 9 and (beam[:, 0] != vocab.END).all()
        assert vocab.START not in beam.tolist()[0]


def test_evaluate_bleu_is_pycocoevalcap_on_its_own_predictions(smoke_cfg, smoke_rows, capsys):
    items, meta = smoke_rows
    model = cap.build_model(smoke_cfg, meta).eval()
    with torch.no_grad():
        metrics = cap.evaluate(model, [torch_batch(items["val"][:5], smoke_cfg), torch_batch(items["val"][5:], smoke_cfg)], smoke_cfg)
    assert capsys.readouterr().out == "", "pycocoevalcap's prints are silenced"
    predictions = metrics["predictions"]
    assert [p["image"] for p in predictions] == [meta["eval_images"][r["eval_index"]]["image"] for r in items["val"]]
    references = {k: p["references"] for k, p in enumerate(predictions)}
    written = {k: [json.loads(json.dumps(p))["prediction"]] for k, p in enumerate(predictions)}
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(references, written)
    assert [metrics[f"val/bleu{n}"] for n in range(1, 5)] == pytest.approx(bleu)
    assert metrics["val/rouge_l"] == pytest.approx(Rouge().compute_score(references, written)[0])
    assert metrics["val/cider"] == pytest.approx(Cider().compute_score(references, written)[0])
    assert metrics["val/distinct"] == len({p["prediction"] for p in predictions}) / len(predictions)
    assert np.isfinite(metrics["val/loss"]) and cap.METRIC == ("val/cider", "max")


def test_the_model_overfits_a_few_batches_and_then_captions_them(smoke_rows):
    cfg = resolve(cap.Config, TIERS["smoke"], sets=["embed_dim=32", "hidden_dim=64", "dropout=0"])
    items, meta = smoke_rows
    torch.manual_seed(0)
    batches = [torch_batch(items["train"][k : k + 4], cfg) for k in (0, 4)]
    model = cap.build_model(cfg, meta)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        for batch in batches:
            value, metrics = cap.loss(model.train(), batch, cfg)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
        losses.append(metrics["loss"])
    assert set(metrics) == {"loss", "word_acc"} and losses[-1] < 0.4 * losses[0], losses[::10]
    with torch.no_grad():
        scored = cap.evaluate(model.eval(), batches, cfg)
    assert scored["val/bleu1"] > 0.5, scored["predictions"][:2]
    assert len({p["prediction"] for p in scored["predictions"]}) > 1, "captions follow the image"
    single = {"features": batches[0]["features"][:1], "captions": batches[0]["captions"][:1, :1]}
    assert torch.isfinite(cap.loss(model.train(), single, cfg)[0]), "a last batch of one image with one caption"


def test_a_run_whose_captions_collapsed_ends_with_a_warning():
    manifest = {
        "best_metrics": {"val/distinct": 2 / 48, "val/vocab": 5.0},
        "test_metrics": {"test/distinct": 0.75},
        "data": {"images": {"train": 400, "val": 48, "test": 48}},
    }
    (line,) = cap.run_warnings(manifest)
    assert line.startswith("generation collapsed on the val split: 2 distinct captions for 48 inputs")
    manifest["best_metrics"]["val/distinct"] = 0.5
    assert cap.run_warnings(manifest) == []


def test_predict_captions_image_files_with_a_beam(smoke_cfg, smoke_rows, tmp_path):
    items, meta = smoke_rows
    model = cap.build_model(smoke_cfg, meta)
    paths = [items["val"][0]["image_path"], items["val"][1]["image_path"]]
    results = cap.predict(model, paths, smoke_cfg, meta, beam=3)
    assert [r["input"] for r in results] == paths and all(isinstance(r["caption"], str) for r in results)
    with pytest.raises(UserError, match="--beam must be at least 1"):
        cap.predict(model, paths, smoke_cfg, meta, beam=0)
    with pytest.raises(UserError, match="gone.jpg: image not found"):
        cap.predict(model, [str(tmp_path / "gone.jpg")], smoke_cfg, meta)


def test_the_seeds_mode_names_are_aliases_of_tiers():
    assert set(TIERS) == {"smoke", "fast", "standard", "full"}
    # The seed's "fast" cannot be an alias: aliases are looked up first and would hide the fast tier.
    assert ALIASES == {"minimal": "fast", "optimized": "full"}
    space = registry.load("captioning").space
    assert registry.tier_overrides(space, "minimal")["vocab_size"] == 3000
    assert registry.tier_overrides(space, "fast")["vocab_size"] == 3000
    assert registry.tier_overrides(space, "standard")["vocab_size"] == 5000
    assert resolve(cap.Config, registry.tier_overrides(space, "optimized")).vocab_size == 8000


# ---------------------------------------------------------------- end to end


def test_smoke_run_reuses_its_cached_features_and_predicts(ray_address, tmp_path):
    # The trainable and the run's files, not Ray Train's workers: local mode (--workers 0) is seconds sooner.
    first = run_command(
        "run", "captioning", "--tier", "smoke", "--workers", "0", "--storage", str(tmp_path), "--name", "e2e", address=ray_address
    )
    assert first.returncode == 0, first.stderr[-4000:]
    run_dir = tmp_path / "captioning" / "e2e"
    for name in ("manifest.json", "val_predictions.jsonl", "test_predictions.jsonl", "best_model.pt"):
        assert (run_dir / name).stat().st_size > 0, name
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert "random initialisation" in manifest["data"]["image_encoder"]
    assert {"val/rouge_l", "val/cider", "val/distinct", "val/vocab"} <= set(manifest["best_metrics"])
    assert {"test/cider", "test/distinct"} <= set(manifest["test_metrics"])
    printed = [line for line in first.stderr.splitlines() if line.startswith("warning: generation collapsed")]
    assert printed == [f"warning: {line}" for line in cap.run_warnings(manifest)]
    predictions = [json.loads(line) for line in (run_dir / "val_predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == manifest["data"]["rows"]["val"] and {"image", "references", "prediction"} <= set(predictions[0])
    caches = [Path(s["uri"]) for s in manifest["data"]["store"].values()]
    files = {path: path.stat().st_mtime_ns for folder in caches for path in folder.glob("*.parquet")}
    assert files and all(folder.is_dir() for folder in caches)
    trivial = manifest["baseline"]
    assert trivial["predictor"].startswith("caption '") and {"val/bleu4", "val/cider"} <= set(trivial["val"])
    assert f"(baseline {trivial['test'][cap.METRIC[0].replace('val/', 'test/')]:.4f})" in first.stdout

    # One epoch is enough to show the features are read back, not computed again (the epochs are no cache key);
    # a model that cannot learn (lr 1e-12) does not beat its baseline caption, and the run says so.
    second = run_command(
        "run",
        "captioning",
        "--tier",
        "smoke",
        "--set",
        "epochs=1",
        "--set",
        "lr=1e-12",
        "--workers",
        "0",
        "--storage",
        str(tmp_path),
        "--name",
        "again",
        address=ray_address,
    )
    assert second.returncode == 0, second.stderr[-4000:]
    assert f"warning: [captioning] the best {cap.METRIC[0]}" in second.stderr and "does not beat the trivial baseline" in second.stderr
    again = json.loads((tmp_path / "captioning" / "again" / "manifest.json").read_text())
    assert again["data"]["store"] == manifest["data"]["store"]
    assert {path: path.stat().st_mtime_ns for path in files} == files, "features were not computed again"

    image = Path(manifest["data"]["data_path"]) / "Images" / predictions[0]["image"]
    result = run_command("predict", str(run_dir), str(image), "--beam", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(image)) and "  caption: " in result.stdout


# ---------------------------------------------------------------- real images: captions that depend on the image


def best_constant_caption(train_rows: list[dict]) -> str:
    """The one training caption with the best BLEU-4 against every training image's references
    (all as written, normalised): what a captioner that ignores the image would learn to say."""
    references = {k: [data.normalize(c) for c in row["captions"]] for k, row in enumerate(train_rows)}
    candidates = sorted({caption for captions in references.values() for caption in captions})

    def bleu4(caption: str) -> float:
        with contextlib.redirect_stdout(io.StringIO()):
            return Bleu(4).compute_score(references, {k: [caption] for k in references}, verbose=0)[0][3]

    return max(candidates, key=bleu4)


def test_the_fast_tier_writes_image_dependent_captions_that_beat_the_constant_caption():
    """A short fast-tier training on a seeded split of 240 real Flickr8k images (pretrained encoder
    features; the platform's optimizer and schedule, without Ray): on the held-out test images the
    captions are varied and score above the best constant caption on CIDEr or BLEU-4."""
    folder = shared_dataset("flickr8k_dev")
    cfg = resolve(cap.Config, TIERS["fast"], sets=[f"data_dir={folder}"])
    items, meta = cap.raw_rows(cfg)
    if "random initialisation" in meta["image_encoder"]:  # the packaged EfficientNet-Lite0 is a dependency
        pytest.skip(f"no pretrained image encoder here ({meta['image_encoder']})")
    batches = {
        split: [torch_batch(rows[k : k + cfg.batch_size], cfg) for k in range(0, len(rows), cfg.batch_size)]
        for split, rows in items.items()
    }
    torch.manual_seed(cfg.seed)
    model = cap.build_model(cfg, meta)
    optimizer, generator = build_optimizer(model, cfg), torch.Generator().manual_seed(cfg.seed)
    scheduler = build_scheduler(optimizer, cfg)
    features = torch.cat([b["features"] for b in batches["train"]])
    captions = torch.cat([b["captions"] for b in batches["train"]])
    for _ in range(cfg.epochs):
        model.train()
        for rows in torch.randperm(len(features), generator=generator).split(cfg.batch_size):
            value, _ = cap.loss(model, {"features": features[rows], "captions": captions[rows]}, cfg)
            optimizer.zero_grad()
            value.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
        scheduler.step()
    with torch.no_grad():
        scored = cap.evaluate(model.eval(), batches["test"], cfg)
    raw_splits, _ = data.read_flickr(cfg.data_dir, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    constant = best_constant_caption(raw_splits["train"])
    baseline = caption_metrics([{**p, "prediction": constant} for p in scored["predictions"]])
    shown = {key: round(value, 3) for key, value in scored.items() if key != "predictions"}
    assert scored["val/distinct"] >= 0.5, (shown, [p["prediction"] for p in scored["predictions"]])
    assert scored["val/cider"] > baseline["val/cider"] or scored["val/bleu4"] > baseline["val/bleu4"], (shown, constant, baseline)
