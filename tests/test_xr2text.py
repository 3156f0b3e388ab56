"""The X-ray report trainable: IU X-Ray folders, synthetic set, curriculum, decoding, metrics, one run.

Run with ``cd <repo> && .venv/bin/python -m pytest -q tests/test_xr2text.py``. Everything but the
last test runs without Ray.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import png_header_only, run_command, shared_dataset
from PIL import Image
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from platform.config import resolve
from platform.errors import UserError
from search_spaces.xr2text import TIERS
from trainables import xr2text as xt
from trainables.xr2text import data, reports, synthetic


@pytest.fixture(scope="module")
def smoke_cfg() -> xt.Config:
    return resolve(xt.Config, TIERS["smoke"])


@pytest.fixture(scope="module")
def synthetic_dir(smoke_cfg) -> Path:
    return synthetic.synthetic_dataset(smoke_cfg)  # under the session's fresh RAYPLATFORM_CACHE


@pytest.fixture(scope="module")
def smoke_splits(synthetic_dir, smoke_cfg):
    return xt.read_splits(str(synthetic_dir), smoke_cfg)


def batch_of(studies: list[dict], meta: dict, cfg: xt.Config) -> dict[str, torch.Tensor]:
    index = {word: i for i, word in enumerate(meta["vocab"])}
    rows = data.rows_of(studies, index, cfg.max_tokens)
    raw = {key: np.array([row[key] for row in rows]) for key in rows[0]}
    return {key: torch.from_numpy(value) for key, value in xt.preprocess(raw, cfg).items()}


def png(path: Path, size: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size), dtype=np.uint8)).save(path)


# ---------------------------------------------------------------- the real sample (reports only)


def test_real_sample_stages_vocabulary_and_skipped_studies(tmp_path, smoke_cfg):
    sample = shared_dataset("iu_xray")
    for name in (data.REPORTS_CSV, data.PROJECTIONS_CSV):
        shutil.copy(sample / name, tmp_path / name)
    with pytest.raises(UserError, match="indiana_reports.csv: no usable study"):  # the sample has no images
        data.read_studies(str(tmp_path), 3)
    projections = pd.read_csv(sample / data.PROJECTIONS_CSV, dtype=str)
    frontal = projections[projections["projection"] == "Frontal"]
    with_image = set(frontal["uid"][::2])
    for filename in frontal[frontal["uid"].isin(with_image)]["filename"]:
        png(tmp_path / "images" / "images_normalized" / filename)

    studies, meta = data.read_studies(str(tmp_path), 3)
    frame = pd.read_csv(sample / data.REPORTS_CSV, dtype=str, keep_default_na=False)
    no_text = (frame["findings"].str.strip() == "") & (frame["impression"].str.strip() == "")
    assert meta["skipped"]["no_report_text"] == no_text.sum() > 0
    assert meta["skipped"]["missing_image"] == (~frame["uid"].isin(with_image) & ~no_text).sum()
    assert len(studies) == (frame["uid"].isin(with_image) & ~no_text).sum()
    by_id = {s["id"]: s for s in studies}
    for uid, stage in (("30", 0), ("33", 1), ("14", 2)):  # normal; Surgical Instruments; Lung + Markings
        if uid in by_id:
            assert by_id[uid]["stage"] == stage
    assert {s["stage"] for s in studies} == {0, 1, 2, 3}

    splits, meta = xt.read_splits(str(tmp_path), dataclasses.replace(smoke_cfg, min_word_count=2))
    assert sum(meta["split_sizes"].values()) == len(studies) and set(splits) == {"train", "val", "test"}
    assert meta["vocab"][:4] == list(reports.SPECIALS) and {"heart", "lungs", "."} <= set(meta["vocab"])
    assert json.dumps(meta)  # meta goes into the manifest


def test_missing_folder_and_columns_name_the_file(tmp_path):
    with pytest.raises(UserError, match="data folder not found"):
        data.read_studies(str(tmp_path / "nope"), 3)
    pd.DataFrame({"uid": [1], "findings": ["x"]}).to_csv(tmp_path / data.REPORTS_CSV, index=False)
    with pytest.raises(UserError, match=r"indiana_reports.csv: missing column\(s\) impression"):
        data.read_studies(str(tmp_path), 3)


def test_annotation_json_bad_input_is_skipped_and_counted(tmp_path, smoke_cfg, capsys):
    for study in ("a", "b", "c", "d"):
        png(tmp_path / "images" / study / "0.png")

    def entry(study: str, report: str, split: str) -> dict:
        return {"id": study, "report": report, "image_path": [f"{study}/0.png"], "split": split}

    annotation = {
        "train": [
            entry("a", "Heart is enlarged. Small left effusion.", "train"),
            entry("b", "Lungs are clear.", "train"),
            entry("e", "No image for this one.", "train"),
            entry("c", "  ", "train"),
        ],
        "val": [entry("d", "No pleural effusion. Normal heart.", "val")],
        "test": [],
    }
    (tmp_path / data.ANNOTATION_JSON).write_text(json.dumps(annotation))
    splits, meta = xt.read_splits(str(tmp_path), smoke_cfg)
    assert meta["skipped"] == {"no_report_text": 1, "missing_image": 1, "empty_split": 1}
    assert "warning: skipped 1 without findings or impression, 1 without an image on disk, 1 empty split(s)" in capsys.readouterr().err
    assert set(splits) == {"train", "val"}
    assert {s["id"]: s["stage"] for s in splits["train"]} == {"a": 2, "b": 0}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (data.REPORTS_CSV, b"", "empty file"),
        (data.PROJECTIONS_CSV, b"uid,filename,projection\n", "a header but no rows"),
        (data.REPORTS_CSV, b"uid,findings,impression\n1,caf\xe9,normal\n", "not UTF-8 text (byte 0xe9 on line 2)"),
        (data.ANNOTATION_JSON, b'{"train": [{"report": "caf\xe9"}]}', "not UTF-8 text (byte 0xe9 on line 1)"),
    ],
)
def test_an_empty_header_only_or_non_utf8_file_is_a_user_error_naming_it(tmp_path, name, content, message):
    (tmp_path / data.REPORTS_CSV).write_text("uid,findings,impression\n1,Heart is normal.,No effusion.\n")
    (tmp_path / data.PROJECTIONS_CSV).write_text("uid,filename,projection\n1,1.png,Frontal\n")
    png(tmp_path / "images" / "1.png")
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / name}: {message}")):
        data.read_studies(str(tmp_path), 3)


@pytest.mark.parametrize("layout", ["projections", "annotation"])
@pytest.mark.parametrize("image", ["../outside.png", "images/../../outside.png", "ABSOLUTE"])
def test_an_image_path_outside_the_data_folder_is_a_user_error_naming_it(tmp_path, layout, image):
    png(tmp_path / "outside.png")
    root = tmp_path / "data"
    image = str(tmp_path / "outside.png") if image == "ABSOLUTE" else image
    root.mkdir()
    if layout == "projections":
        (root / data.REPORTS_CSV).write_text("uid,findings,impression\n1,Heart is normal.,No effusion.\n")
        pd.DataFrame({"uid": [1], "filename": [image], "projection": ["Frontal"]}).to_csv(root / data.PROJECTIONS_CSV, index=False)
        named = root / data.PROJECTIONS_CSV
    else:
        entry = {"id": "1", "report": "Heart is normal.", "image_path": [image], "split": "train"}
        (root / data.ANNOTATION_JSON).write_text(json.dumps({"train": [entry], "val": [entry]}))
        named = root / data.ANNOTATION_JSON
    with pytest.raises(UserError, match=re.escape(f"{named}: path {image!r} points outside the data folder")):
        data.read_studies(str(root), 3)


@pytest.mark.parametrize(
    ("side", "message"),
    [
        (9_000, "9000x9000 pixels, more than the 64,000,000 pixels an image may have"),  # above ours, below Pillow's limit
        (20_000, "more than the 64,000,000 pixels an image may have"),  # Pillow's own DecompressionBombError
        (0, "not a readable image"),
    ],
)
def test_a_decompression_bomb_or_a_non_image_is_a_user_error_naming_it_in_preprocess(tmp_path, smoke_cfg, side, message):
    path = tmp_path / "scan.png"
    if side:
        png_header_only(path, side, side)
    else:
        path.write_text("uid,findings\n")
    raw = {
        "image_path": np.array([str(path)]),
        "tokens": np.zeros((1, 4), np.int64),
        "reference": np.zeros((1, 4), np.uint8),
        "id": np.zeros((1, 4), np.uint8),
        "stage": np.array([0]),
    }
    with pytest.raises(UserError, match=re.escape(f"{path}: {message}")):
        xt.preprocess(raw, smoke_cfg)


# ---------------------------------------------------------------- synthetic set and stages


def test_synthetic_set_is_in_the_iu_layout_and_its_images_show_the_findings(synthetic_dir, smoke_cfg):
    frame = pd.read_csv(synthetic_dir / data.REPORTS_CSV, dtype=str, keep_default_na=False)
    projections = pd.read_csv(synthetic_dir / data.PROJECTIONS_CSV, dtype=str)
    assert len(frame) == smoke_cfg.synthetic_studies and set(data.REPORT_COLUMNS) <= set(frame.columns)
    assert len(projections) == 2 * len(frame) and set(projections["projection"]) == {"Frontal", "Lateral"}
    assert all((synthetic_dir / "images" / f).is_file() for f in projections["filename"])
    # The heart shadow (centre, lower half) is wider with cardiomegaly: its row is brighter there.
    frontal = dict(
        zip(projections["uid"][projections["projection"] == "Frontal"], projections["filename"][projections["projection"] == "Frontal"])
    )
    size = smoke_cfg.synthetic_image_size

    def cardiac_band(uid: str) -> float:
        pixels = np.asarray(Image.open(synthetic_dir / "images" / frontal[uid]))
        return pixels[int(size * 0.65), int(size * 0.3) : int(size * 0.72)].mean()

    enlarged = frame["MeSH"].str.contains("Cardiomegaly")
    assert enlarged.any() and (~enlarged).any()
    assert np.mean([cardiac_band(u) for u in frame["uid"][enlarged]]) > np.mean([cardiac_band(u) for u in frame["uid"][~enlarged]]) + 20


def test_stages_from_mesh_and_keywords():
    assert reports.stage_of(*reports.mesh_findings("normal", "normal"), 3) == 0
    assert reports.stage_of(*reports.mesh_findings("", "Cardiomegaly"), 3) == 1
    assert reports.stage_of(*reports.mesh_findings("Opacity/lung/left;Opacity/lung/right", ""), 3) == 1
    assert reports.stage_of(*reports.mesh_findings("Opacity/left;Cardiomegaly/mild", ""), 3) == 2
    assert reports.stage_of(*reports.mesh_findings("Opacity/left/severe;Cardiomegaly", ""), 3) == 3
    assert reports.stage_of(*reports.mesh_findings("A;B;C;No Indexing", ""), 3) == 3
    assert reports.stage_of(*reports.keyword_findings("No pleural effusion or pneumothorax. Lungs are clear."), 3) == 0
    assert reports.stage_of(*reports.keyword_findings("Large right pleural effusion. Cardiomegaly."), 3) == 3
    assert reports.words("Heart size, normal.XXXX") == ["heart", "size", ",", "normal", ".", "xxxx"]


def test_schedule_follows_the_seed_and_filters_locked_stages(smoke_cfg):
    seed = xt.Config()
    stages = [xt.epoch_schedule(epoch, seed)["stage"] for epoch in range(seed.epochs)]
    assert stages == [0] * 5 + [1] * 10 + [2] * 15 + [3] * 20
    assert xt.epoch_schedule(0, dataclasses.replace(seed, curriculum=False)) == {"stage": 3}
    assert [xt.epoch_schedule(e, smoke_cfg)["stage"] for e in range(smoke_cfg.epochs)] == [0, 1, 2, 3]
    batch = {"stage": torch.tensor([0, 3, 1, 2, 0])}
    assert xt.train_filter(batch, {"stage": 1}, seed).tolist() == [True, False, True, False, True]


# ---------------------------------------------------------------- model, loss, decoding, metrics


@pytest.fixture(scope="module")
def val_batch(smoke_splits, smoke_cfg):
    splits, meta = smoke_splits
    return batch_of(splits["val"], meta, smoke_cfg)


def test_beam_and_greedy_decoding(smoke_splits, smoke_cfg, val_batch):
    torch.manual_seed(0)
    model = xt.build_model(smoke_cfg, smoke_splits[1]).eval()
    images = val_batch["image"][:3]
    greedy, beam = model.generate(images, 1), model.generate(images, 3)
    assert greedy.shape[0] == beam.shape[0] == 3
    assert max(greedy.shape[1], beam.shape[1]) <= smoke_cfg.max_tokens + 1
    assert (greedy[:, 0] != reports.EOS_ID).all() and (beam[:, 0] != reports.EOS_ID).all()
    with torch.no_grad():  # beam 1 is an argmax at each step
        memory, tokens = model.encode(images[:1]), torch.tensor([[reports.BOS_ID]])
        for _ in range(smoke_cfg.max_tokens):  # generate ends a report still going at max_tokens with <eos>
            logits = model.decode_logits(memory, tokens)[:, -1]
            logits[:, [reports.PAD_ID, reports.BOS_ID]] = float("-inf")
            if tokens.shape[1] == 1:
                logits[:, reports.EOS_ID] = float("-inf")
            tokens = torch.cat([tokens, logits.argmax(dim=1, keepdim=True)], dim=1)
            if tokens[0, -1] == reports.EOS_ID:
                break
    assert tokens[0, 1:].tolist() == greedy[0, : tokens.shape[1] - 1].tolist()


def test_overfits_a_few_batches_and_evaluate_matches_pycocoevalcap(smoke_splits, smoke_cfg, val_batch):
    splits, meta = smoke_splits
    torch.manual_seed(0)
    model = xt.build_model(smoke_cfg, meta)
    batch = batch_of(splits["train"][:8], meta, smoke_cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        model.train()
        value, metrics = xt.loss(model, batch, smoke_cfg)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(metrics["loss"])
    assert losses[-1] < 0.5 * losses[0]

    model.eval()
    with torch.no_grad():
        results = xt.evaluate(model, [batch, val_batch], dataclasses.replace(smoke_cfg, beam_width=2))
    rows = results["predictions"]
    assert len(rows) == len(splits["train"][:8]) + len(splits["val"])
    assert rows[0]["id"] == splits["train"][0]["id"]
    assert rows[0]["reference"] == reports.normalized(splits["train"][0]["report"])
    gts = {i: [r["reference"]] for i, r in enumerate(rows)}
    res = {i: [r["prediction"]] for i, r in enumerate(rows)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    assert results["val/bleu4"] == pytest.approx(bleu[3]) and results["val/rouge_l"] == pytest.approx(rouge)
    assert results["val/bleu4_rouge_l"] == pytest.approx(bleu[3] + rouge)
    assert results["val/cider"] == pytest.approx(Cider().compute_score(gts, res)[0])
    assert results["val/distinct"] == len(set(res_text := [r["prediction"] for r in rows])) / len(rows)
    assert results["val/vocab"] == len({word for text in res_text for word in text.split()})
    assert results["val/bleu1"] > 0.3  # the memorised training reports come back


def test_a_run_whose_reports_collapsed_ends_with_a_warning():
    manifest = {
        "best_metrics": {"val/distinct": 0.5},
        "test_metrics": {"test/distinct": 0.1, "test/vocab": 12.0},
        "data": {"split_sizes": {"train": 200, "val": 30, "test": 60}},
    }
    (line,) = xt.run_warnings(manifest)
    assert line.startswith("generation collapsed on the test split: 6 distinct reports for 60 inputs")


def test_the_full_tier_is_the_seeds_recipe():
    assert set(TIERS) == {"smoke", "fast", "standard", "full"}
    full = resolve(xt.Config, TIERS["full"])
    assert (full.epochs, full.batch_size, full.grad_accum_steps, full.amp, full.patience, full.checkpoint_every) == (50, 4, 8, True, 999, 5)


# ---------------------------------------------------------------- end to end, on Ray


def test_smoke_run_survives_a_lost_worker_in_the_right_stage_and_predicts(ray_address, tmp_path, smoke_cfg, synthetic_dir, monkeypatch):
    # The driver scores the test split and times predictions: two torch threads on this shared
    # 2-core machine spin against each other (30x slower decoding here).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # The worker dies as epoch 3 starts: the restarted one must go on in stage 2, then 3.
    result = run_command(
        "run", "xr2text", "--tier", "smoke", "--storage", str(tmp_path), "--name", "e2e", "--fail-at-epoch", "3", address=ray_address
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "xr2text" / "e2e"
    for name in ("manifest.json", "history.csv", "val_predictions.jsonl", "test_predictions.jsonl", "best_model.pt"):
        assert (run_dir / name).is_file(), name
    history = pd.read_csv(run_dir / "history.csv")
    assert history["schedule/stage"].tolist() == [0, 1, 2, 3]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["training"]["restarts"] == 1
    assert manifest["data"]["skipped"]["missing_image"] == 0 and "test/bleu4_rouge_l" in manifest["test_metrics"]
    trivial = manifest["baseline"]  # fitted once by the driver: the worker's restart does not refit it
    assert trivial["predictor"].startswith("report '") and trivial["val"]["val/bleu4_rouge_l"] > 0
    assert "test/bleu4_rouge_l" in trivial["test"] and "(baseline " in result.stdout
    val_rows = [json.loads(line) for line in (run_dir / "val_predictions.jsonl").read_text().splitlines()]
    assert len(val_rows) == manifest["data"]["split_sizes"]["val"]
    gts = {i: [r["reference"]] for i, r in enumerate(val_rows)}
    res = {i: [r["prediction"]] for i, r in enumerate(val_rows)}
    rouge, _ = Rouge().compute_score(gts, res)
    assert manifest["best_metrics"]["val/rouge_l"] == pytest.approx(rouge)

    image = next((synthetic_dir / "images").glob("*-1001.dcm.png"))
    predicted = run_command("predict", str(run_dir), str(image), "--beam", "3", address=ray_address)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert str(image) in predicted.stdout and "report: " in predicted.stdout
