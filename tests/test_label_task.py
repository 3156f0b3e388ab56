"""The labeler is generic: a task of the user's (its prompt, reply schema, label and columns), written
outside the platform and the trainables, labels its own table; against the loopback server.

    .venv/bin/python -m pytest tests/test_label_task.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
from helpers import REPO, last_line
from labeling import KEY, PRICES, label
from openai_replies import expected_score
from openai_server import FakeOpenAI
from PIL import Image

TONE_TASK = """
from typing import Literal

from pydantic import BaseModel, ConfigDict

VERSION = "tone-v1"
SYSTEM = "Look at the photo and read the review, then say the review's tone."
LABEL = "tone"
COLUMNS = {"id": "review_id", "image": "photo", "text": "review"}
TEXT_PREFIX = "Review: "
GENERATION = {"temperature": 0.0, "max_tokens": 40, "image_detail": "low"}
INPUT_FILE = "reviews.csv"


class Reply(BaseModel):
    model_config = ConfigDict(title="review_tone", json_schema_extra={"additionalProperties": False})
    tone: Literal["calm", "angry", "sad"]
    reason: str
"""
TONES = ["calm", "angry", "sad"]
REVIEWS = ["the soup was cold", "lovely view from the terrace", "never again", "fine, nothing special"]


def write_reviews(folder):
    (folder / "photos").mkdir(parents=True)
    rows = []
    for i, review in enumerate(REVIEWS):
        Image.new("RGB", (8, 8), (i * 40, 90, 200 - i * 30)).save(folder / "photos" / f"r{i}.png")
        rows.append((f"r{i}", f"photos/r{i}.png", review))
    rows.append(("silent", "photos/r0.png", ""))
    pd.DataFrame(rows, columns=["review_id", "photo", "review"]).to_csv(folder / "reviews.csv", index=False)
    return folder


def test_a_task_of_the_users_labels_its_own_table_with_its_own_schema(tmp_path, ray_address, monkeypatch):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "review_tone.py").write_text(TONE_TASK)
    # Only the command sees the module: the Ray actors get the task by value.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "tasks"), os.environ.get("PYTHONPATH", "")]))
    folder = write_reviews(tmp_path / "reviews")
    with FakeOpenAI(key=KEY) as server:
        result = label(
            str(folder),
            "--task",
            "review_tone",
            "--base-url",
            server.url,
            *PRICES,
            "--rps",
            "20",
            "--concurrency",
            "4",
            address=ray_address,
        )
        calls = list(server.calls)
    assert result.returncode == 0, result.stderr[-3000:]
    out = folder / "labeled"
    labels = pd.read_csv(out / "labels.csv", dtype=str, keep_default_na=False)
    assert list(labels.columns[:5]) == ["review_id", "photo", "review", "tone", "reason"]
    # The server answers a structured request's label property: an enum's member by the text's checksum.
    assert dict(zip(labels["review"], labels["tone"])) == {review: TONES[expected_score(f"Review: {review}") % 3] for review in REVIEWS}
    assert (labels["prompt_version"] == "tone-v1").all()
    assert {c["response_format"]["json_schema"]["name"] for c in calls} == {"review_tone"}
    quarantine = pd.read_csv(out / "quarantine.csv", dtype=str, keep_default_na=False)
    assert quarantine[["review_id", "reason"]].values.tolist() == [["silent", "empty_review"]]
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["task"] == "review_tone" and ledger["rows"]["labeled"] == 4


def test_an_unknown_or_incomplete_task_is_one_error_before_any_work(tmp_path, monkeypatch):
    folder = write_reviews(tmp_path / "reviews")
    unknown = label(str(folder), "--task", "no_such_task", "--dry-run", key=None)
    assert unknown.returncode == 2
    assert last_line(unknown.stderr).startswith("error: no labeling task 'no_such_task': choose from gender_bias")
    (tmp_path / "half_task.py").write_text("VERSION = 'x'\nSYSTEM = 'y'\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    incomplete = label(str(folder), "--task", "half_task", "--dry-run", key=None)
    assert incomplete.returncode == 2
    assert last_line(incomplete.stderr) == (
        "error: labeling task half_task lacks Reply, LABEL, COLUMNS, TEXT_PREFIX, GENERATION, INPUT_FILE "
        "(see platform/label/task.py for what a task module holds)"
    )
    assert not (folder / "labeled").exists()


def test_the_gender_bias_task_loads_without_importing_torch():
    code = "import sys; from platform.label.task import load; task = load(None); print(task.module, task.label, 'torch' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert shown.stdout.split() == ["trainables.gender_bias.labeling", "score", "False"]
