"""A synthetic IU X-Ray set whose images show what their reports say, written once per shape.

Used by ``python -m platform.run xr2text`` without ``--data``: writes
``<cache>/xr2text/synthetic-v1-...`` in the Open-i layout (``indiana_reports.csv``,
``indiana_projections.csv``, ``images/*.png``, a frontal and a lateral view a study) and the
trainable reads it like real data.

Each study has 0-3 of four findings, each drawn where its report puts it: a wider heart shadow
(cardiomegaly), a bright blob in one lung zone (opacity), a bright base of one lung (pleural
effusion), a small dense dot (nodule); "large"/"severe" ones are drawn bigger. Reports and MeSH
headings are written from the same draw, so curriculum stages and words follow the pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from platform.data.cache import cache_root, write_once

FINDING_KINDS = ("cardiomegaly", "opacity", "effusion", "nodule")
FINDING_COUNT_PROBS = (0.35, 0.3, 0.2, 0.15)  # studies with 0, 1, 2, 3 findings
SIDES = ("right", "left")
ZONES = ("upper", "lower")
NORMAL_SENTENCES = {
    "cardiomegaly": ("the heart is normal in size .", "heart size is within normal limits ."),
    "lungs": ("the lungs are clear .", "no focal airspace consolidation ."),
    "effusion": ("no pleural effusion or pneumothorax .", "there is no pleural effusion ."),
}


def synthetic_dataset(cfg) -> Path:
    """The folder of the synthetic set for cfg's size, written on first use."""
    name = f"synthetic-v1-n{cfg.synthetic_studies}-px{cfg.synthetic_image_size}-seed{cfg.seed}"
    folder = cache_root() / "xr2text" / name
    return write_once(folder, lambda partial: write_dataset(partial, cfg.synthetic_studies, cfg.synthetic_image_size, cfg.seed))


def draw_findings(rng: np.random.Generator) -> list[dict]:
    count = rng.choice(len(FINDING_COUNT_PROBS), p=FINDING_COUNT_PROBS)
    kinds = rng.choice(FINDING_KINDS, size=count, replace=False)
    return [
        {"kind": str(kind), "side": str(rng.choice(SIDES)), "zone": str(rng.choice(ZONES)), "severe": bool(rng.random() < 0.25)}
        for kind in kinds
    ]


def _ellipse(shape, centre, radii) -> np.ndarray:
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    return ((xs - centre[0]) / radii[0]) ** 2 + ((ys - centre[1]) / radii[1]) ** 2 <= 1


def _lung_centre(side: str, size: int, shift: float) -> float:
    # Radiographs show the patient's right on the image's left.
    return size * ((0.3 if side == "right" else 0.7) + shift)


def render(findings: list[dict], size: int, rng: np.random.Generator) -> np.ndarray:
    """A frontal radiograph-like [size, size] uint8 image with each finding drawn where it is."""
    shift = rng.uniform(-0.03, 0.03)
    image = np.full((size, size), 0.12)
    image[_ellipse(image.shape, (size * (0.5 + shift), size * 0.55), (size * 0.45, size * 0.45))] = 0.4
    for side in SIDES:
        image[_ellipse(image.shape, (_lung_centre(side, size, shift), size * 0.5), (size * 0.15, size * 0.3))] = 0.1
    kinds = {f["kind"]: f for f in findings}
    heart = kinds.get("cardiomegaly")
    heart_width = 0.14 if heart is None else (0.26 if heart["severe"] else 0.22)
    image[_ellipse(image.shape, (size * (0.52 + shift), size * 0.65), (size * heart_width, size * 0.13))] = 0.75
    image[:, int(size * (0.48 + shift)) : int(size * (0.52 + shift))] += 0.15  # spine
    for finding in findings:
        x = _lung_centre(finding["side"], size, shift)
        if finding["kind"] == "opacity":
            y = size * (0.35 if finding["zone"] == "upper" else 0.62)
            radius = size * (0.11 if finding["severe"] else 0.07)
            ys, xs = np.mgrid[:size, :size]
            image += 0.55 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * radius**2))
        elif finding["kind"] == "effusion":
            top = size * (0.58 if finding["severe"] else 0.68)
            lung = _ellipse(image.shape, (x, size * 0.5), (size * 0.16, size * 0.31))
            lung[: int(top)] = False
            image[lung] = 0.65
        elif finding["kind"] == "nodule":
            y = size * (0.4 if finding["zone"] == "upper" else 0.6)
            image[_ellipse(image.shape, (x, y), (size * 0.03, size * 0.03))] = 0.95
    image += rng.normal(0, 0.03, image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def render_lateral(size: int, rng: np.random.Generator) -> np.ndarray:
    image = np.full((size, size), 0.12)
    image[_ellipse(image.shape, (size * 0.5, size * 0.55), (size * 0.35, size * 0.45))] = 0.35
    image += rng.normal(0, 0.03, image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def _sentence(finding: dict) -> str:
    size = "large" if finding["severe"] else "small"
    side, zone = finding["side"], finding["zone"]
    if finding["kind"] == "cardiomegaly":
        return "the heart is severely enlarged ." if finding["severe"] else "the heart is enlarged ."
    if finding["kind"] == "opacity":
        extent = "extensive" if finding["severe"] else "focal"
        return f"there is {extent} airspace opacity in the {side} {zone} lobe ."
    if finding["kind"] == "effusion":
        return f"{size} {side} pleural effusion ."
    return f"there is a {side} {zone} lung nodule ."


def write_report(findings: list[dict], rng: np.random.Generator) -> tuple[str, str]:
    """(findings section, impression section) in the IU style."""
    kinds = {f["kind"] for f in findings}
    sentences = [_sentence(f) for f in findings]
    if "cardiomegaly" not in kinds:
        sentences.insert(0, str(rng.choice(NORMAL_SENTENCES["cardiomegaly"])))
    if not kinds & {"opacity", "nodule"}:
        sentences.append(str(rng.choice(NORMAL_SENTENCES["lungs"])))
    if "effusion" not in kinds:
        sentences.append(str(rng.choice(NORMAL_SENTENCES["effusion"])))
    impression = (
        "no acute cardiopulmonary abnormality ."
        if not findings
        else " and ".join(f"{f['side']} {f['kind']}" if f["kind"] != "cardiomegaly" else "cardiomegaly" for f in findings) + " ."
    )
    return " ".join(sentences), impression


def mesh_of(findings: list[dict]) -> tuple[str, str]:
    """(MeSH, Problems) fields as Open-i writes them."""
    if not findings:
        return "normal", "normal"
    headings = {"cardiomegaly": "Cardiomegaly", "opacity": "Opacity", "effusion": "Pleural Effusion", "nodule": "Nodule"}
    mesh = ";".join(f"{headings[f['kind']]}/{f['side']}/{'severe' if f['severe'] else 'mild'}" for f in findings)
    return mesh, ";".join(headings[f["kind"]] for f in findings)


def write_dataset(folder: Path, studies: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    report_rows, projection_rows = [], []
    for uid in range(1, studies + 1):
        findings = draw_findings(rng)
        findings_text, impression = write_report(findings, rng)
        mesh, problems = mesh_of(findings)
        report_rows.append(
            {
                "uid": uid,
                "MeSH": mesh,
                "Problems": problems,
                "image": "Xray Chest PA and Lateral",
                "indication": "chest pain",
                "comparison": "None",
                "findings": findings_text,
                "impression": impression,
            }
        )
        for view, projection, pixels in (("1001", "Frontal", render(findings, size, rng)), ("2001", "Lateral", render_lateral(size, rng))):
            filename = f"{uid}_IM-{uid:04d}-{view}.dcm.png"
            Image.fromarray(pixels).save(folder / "images" / filename)
            projection_rows.append({"uid": uid, "filename": filename, "projection": projection})
    pd.DataFrame(report_rows).to_csv(folder / "indiana_reports.csv", index=False)
    pd.DataFrame(projection_rows).to_csv(folder / "indiana_projections.csv", index=False)
