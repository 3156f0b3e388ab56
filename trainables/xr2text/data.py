"""Reading IU X-Ray (Open-i) folders into studies, splits and the rows the trainable trains on.

Used by ``python -m platform.run xr2text --data DIR``, where DIR holds either
- the Kaggle/Open-i layout: ``indiana_reports.csv`` (uid, MeSH, Problems, image, indication,
  comparison, findings, impression), ``indiana_projections.csv`` (uid, filename, projection) and
  the PNGs in ``images/`` (or ``images/images_normalized/``), found by the projections' filename;
- or R2Gen's ``annotation.json`` (``{"train": [{"id", "report", "image_path": [...], "split"}],
  "val": [...], "test": [...]}``, image paths relative to ``images/``), used when present.
No Ray here: tests call it directly.

A study is trained on its frontal image (the first listed image for annotation.json). Studies
without findings and impression, or without an image on disk, are skipped and counted in
``meta["skipped"]``; a missing folder, file or column, an empty or non-UTF-8 file, an image path
outside DIR, or no usable study, is a ``UserError`` (so is an image that does not decode or is
a decompression bomb, found in preprocessing: ``trainables/files.py``).
"""

from __future__ import annotations

import json
import posixpath
import sys

import numpy as np
import pandas as pd
from PIL import Image

from platform.data.content_hash import content_hash
from platform.data.locations import Folder
from platform.errors import UserError
from trainables.files import confined, decode_image, read_csv, utf8_text
from trainables.xr2text import reports

REPORTS_CSV = "indiana_reports.csv"
PROJECTIONS_CSV = "indiana_projections.csv"
ANNOTATION_JSON = "annotation.json"
REPORT_COLUMNS = ("uid", "findings", "impression")
PROJECTION_COLUMNS = ("uid", "filename", "projection")
IMAGE_FOLDERS = ("images", "images/images_normalized", "images_normalized", ".")
SPLITS = ("train", "val", "test")


def _read_csv(folder: Folder, name: str, columns: tuple[str, ...]) -> tuple[pd.DataFrame, bytes]:
    path = folder.path(name)
    if not folder.is_file(name):
        raise UserError(f"{path}: not found (an IU X-Ray folder needs {REPORTS_CSV} and {PROJECTIONS_CSV})")
    raw = folder.read_bytes(name)
    return read_csv(utf8_text(raw, path), path, columns, dtype=str, keep_default_na=False), raw


def report_text(findings: str, impression: str) -> str:
    """Findings then impression, the sections a radiologist writes; empty when both are."""
    return " ".join(part.strip() for part in (findings, impression) if str(part).strip())


def _find_image(folder: Folder, present: set[str], filenames: list[str]) -> str | None:
    """The first of ``filenames`` in an image folder; ``present``: the data folder's files."""
    for filename in filenames:
        for images in IMAGE_FOLDERS:
            relative = posixpath.normpath(f"{images}/{filename}")
            if relative in present:
                return folder.path(relative)
    return None


def _read_open_i(root: Folder, present: set[str], complex_min: int) -> tuple[list[dict], dict, bytes]:
    frame, reports_raw = _read_csv(root, REPORTS_CSV, REPORT_COLUMNS)
    projections, projections_raw = _read_csv(root, PROJECTIONS_CSV, PROJECTION_COLUMNS)
    # Frontal views first: the one a report is mostly written from.
    projections = projections.assign(lateral=projections["projection"].str.lower() != "frontal")
    projections["filename"] = [confined(name, root.path(PROJECTIONS_CSV)) for name in projections["filename"]]
    files = projections.sort_values("lateral", kind="stable").groupby("uid")["filename"].apply(list).to_dict()
    skipped = {"no_report_text": 0, "missing_image": 0}
    studies = []
    for row in frame.to_dict("records"):
        text = report_text(row["findings"], row["impression"])
        if not reports.words(text):
            skipped["no_report_text"] += 1
            continue
        image = _find_image(root, present, files.get(row["uid"], []))
        if image is None:
            skipped["missing_image"] += 1
            continue
        mesh, problems = str(row.get("MeSH", "")), str(row.get("Problems", ""))
        indexed = bool(mesh.strip() or problems.strip())
        findings, severe = reports.mesh_findings(mesh, problems) if indexed else reports.keyword_findings(text)
        studies.append(
            {
                "id": str(row["uid"]),
                "report": text,
                "image_path": str(image),
                "stage": reports.stage_of(findings, severe, complex_min),
                "split": "",
            }
        )
    return studies, skipped, reports_raw + projections_raw


def _read_annotation(root: Folder, present: set[str], complex_min: int) -> tuple[list[dict], dict, bytes]:
    path = root.path(ANNOTATION_JSON)
    raw = root.read_bytes(ANNOTATION_JSON)
    try:
        splits = json.loads(utf8_text(raw, path))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(splits, dict) or not any(isinstance(splits.get(s), list) for s in SPLITS):
        raise UserError(f"{path}: expected {{'train': [...], 'val': [...], 'test': [...]}}")
    skipped = {"no_report_text": 0, "missing_image": 0}
    studies = []
    for split in SPLITS:
        for entry in splits.get(split) or []:
            text = str(entry.get("report", ""))
            if not reports.words(text):
                skipped["no_report_text"] += 1
                continue
            image = _find_image(root, present, [confined(str(p), path) for p in entry.get("image_path", [])])
            if image is None:
                skipped["missing_image"] += 1
                continue
            findings, severe = reports.keyword_findings(text)
            studies.append(
                {
                    "id": str(entry.get("id", "")),
                    "report": text,
                    "image_path": str(image),
                    "stage": reports.stage_of(findings, severe, complex_min),
                    "split": split,
                }
            )
    return studies, skipped, raw


def read_studies(data_dir: str, complex_min: int) -> tuple[list[dict], dict]:
    """Usable studies ({id, report, image_path, stage, split}) and facts for meta, without Ray."""
    root = Folder(data_dir)
    if not root.exists():
        raise UserError(f"{data_dir}: data folder not found")
    present = root.tree()  # one listing: the image folders are searched in it, not file by file
    has_annotation = ANNOTATION_JSON in present
    reader = _read_annotation if has_annotation else _read_open_i
    studies, skipped, raw = reader(root, present, complex_min)
    if not studies:
        source = root.path(ANNOTATION_JSON if has_annotation else REPORTS_CSV)
        raise UserError(
            f"{source}: no usable study (skipped: {skipped['no_report_text']} without findings "
            f"or impression, {skipped['missing_image']} without an image on disk)"
        )
    meta = {
        "data_path": root.location,
        "format": "annotation.json" if has_annotation else "open-i csv",
        "content_hash": content_hash([raw], {s["image_path"]: s["image_path"] for s in studies}),
        "skipped": skipped,
    }
    return studies, meta


def split_studies(studies: list[dict], val_fraction: float, test_fraction: float, seed: int, max_studies: int = 0) -> dict[str, list[dict]]:
    """Studies by split: the file's own split when it has one (all three, empty when absent or
    emptied by skipped studies), else a seeded shuffle of the studies (test only if test_fraction > 0)."""
    order = np.random.default_rng(seed).permutation(len(studies))
    if max_studies > 0:
        order = order[:max_studies]
    chosen = [studies[i] for i in np.sort(order)]
    if any(s["split"] for s in chosen):
        return {name: [s for s in chosen if s["split"] == name] for name in SPLITS}
    shuffled = [studies[i] for i in order]
    n_val, n_test = round(len(shuffled) * val_fraction), round(len(shuffled) * test_fraction)
    n_val = max(n_val, 1 if val_fraction > 0 and len(shuffled) > 1 else 0)
    splits = {"val": shuffled[:n_val], "train": shuffled[n_val + n_test :]}
    if test_fraction > 0:  # none asked for is not an empty split
        splits["test"] = shuffled[n_val : n_val + n_test]
    return splits


def warn_skipped(skipped: dict) -> None:
    """One stderr line when anything was left out, so a user sees it without reading meta."""
    labels = {
        "no_report_text": "without findings or impression",
        "missing_image": "without an image on disk",
        "empty_split": "empty split(s)",
    }
    counted = {k: v for k, v in skipped.items() if v}
    if counted:
        described = ", ".join(f"{value} {labels.get(key, key)}" for key, value in counted.items())
        sys.stderr.write(f"[xr2text] warning: skipped {described} (counted in manifest data.skipped)\n")


def rows_of(split: list[dict], index: dict[str, int], max_tokens: int) -> list[dict]:
    """Raw Ray rows: image path, target ids, and id/reference as padded bytes (numeric for Ray)."""
    ids = reports.to_bytes([s["id"] for s in split])
    references = reports.to_bytes([reports.normalized(s["report"]) for s in split])
    return [
        {
            "image_path": s["image_path"],
            "tokens": reports.encode(s["report"], index, max_tokens),
            "reference": reference,
            "id": study_id,
            "stage": int(s["stage"]),
        }
        for s, reference, study_id in zip(split, references, ids)
    ]


def load_image(path: str, size: int) -> np.ndarray:
    """[1, size, size] uint8 grayscale, resized (X-rays are near square; no crop, the borders matter)."""
    image = decode_image(path, "L").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)[None].copy()
