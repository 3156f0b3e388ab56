"""A run's checkpoints as files, without Ray: which exist, which load, orphans, names; crash-safe writes.

.venv/bin/python -m pytest tests/test_checkpoints.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO

from platform.runs import durable
from platform.train import checkpoints


def _result(name: str, **metrics) -> dict:
    return {"metrics": metrics, "checkpoint_dir_name": name}


def _run(tmp_path: Path, results: list[dict], orphans: tuple[str, ...] = ()) -> Path:
    """A run folder as Ray Train leaves it: recorded checkpoints (state.pt each) and a snapshot."""
    for result in results:
        folder = tmp_path / result["checkpoint_dir_name"]
        folder.mkdir()
        torch.save({"epoch": result["metrics"]["epoch"], "position": result["metrics"].get("position", 0)}, folder / checkpoints.STATE_FILE)
    for name in orphans:
        (tmp_path / name).mkdir()
        (tmp_path / name / checkpoints.STATE_FILE).write_bytes(b"half a checkpoint")
    snapshot = {"checkpoint_results": results, "latest_checkpoint_result": results[-1]}
    (tmp_path / checkpoints.SNAPSHOT_FILE).write_text(json.dumps(snapshot))
    return tmp_path


RESULTS = [
    _result("epoch_0001-attempt_0-aaaaaa", epoch=1, **{"val/acc": 0.5}),
    _result("epoch_0002-attempt_0-aaaaaa", epoch=2, **{"val/acc": 0.75}),
    _result("epoch_0002-step_0000013-attempt_0-aaaaaa", epoch=2, step=13, position=40, partial=1, **{"val/acc": -1e30}),
]


def test_recorded_checkpoints_are_newest_first_and_the_best_is_an_epoch_end(tmp_path):
    snapshot = checkpoints.read_snapshot(str(_run(tmp_path, RESULTS)))
    assert [row["dir"] for row in checkpoints.recorded(snapshot)] == [r["checkpoint_dir_name"] for r in reversed(RESULTS)]
    assert checkpoints.best(snapshot, "val/acc", "max")["dir"] == "epoch_0002-attempt_0-aaaaaa"
    assert checkpoints.best(snapshot, "val/acc", "min")["dir"] == "epoch_0001-attempt_0-aaaaaa"
    assert checkpoints.read_snapshot(str(tmp_path / "nothing")) is None


def test_a_torn_latest_checkpoint_falls_back_to_the_one_before_with_a_warning(tmp_path):
    run = _run(tmp_path, RESULTS)
    latest = run / RESULTS[-1]["checkpoint_dir_name"] / checkpoints.STATE_FILE
    latest.write_bytes(latest.read_bytes()[:100])  # a full disk or a lost node cut the write short
    warnings: list[str] = []
    folder, state = checkpoints.load_newest(str(run), first=RESULTS[-1]["checkpoint_dir_name"], warn=warnings.append)
    assert folder == "epoch_0002-attempt_0-aaaaaa" and state == {"epoch": 2, "position": 0}
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: checkpoint {RESULTS[-1]['checkpoint_dir_name']} is unreadable")


def test_ray_trains_pick_is_tried_first_and_nothing_newer_than_it(tmp_path):
    run = _run(tmp_path, RESULTS)
    folder, state = checkpoints.load_newest(str(run), first="epoch_0001-attempt_0-aaaaaa")
    assert folder == "epoch_0001-attempt_0-aaaaaa" and state["epoch"] == 1


def test_no_readable_checkpoint_is_none(tmp_path):
    run = _run(tmp_path, RESULTS[:1])
    (run / RESULTS[0]["checkpoint_dir_name"] / checkpoints.STATE_FILE).write_bytes(b"")
    assert checkpoints.load_newest(str(run)) is None


def test_orphans_are_the_folders_the_snapshot_does_not_record(tmp_path):
    run = _run(tmp_path, RESULTS, orphans=("epoch_0003-attempt_1-bbbbbb", "epoch_0003-step_0000020-attempt_2-cccccc"))
    (run / "tensorboard").mkdir()
    assert checkpoints.remove_orphans(str(run)) == ["epoch_0003-attempt_1-bbbbbb", "epoch_0003-step_0000020-attempt_2-cccccc"]
    assert checkpoints.folders(str(run)) == sorted(r["checkpoint_dir_name"] for r in RESULTS)
    assert (run / "tensorboard").is_dir()


def test_two_attempts_with_the_same_restart_count_name_their_checkpoints_apart():
    # Two failures that restore the same checkpoint start two attempts with the same counters.
    code = "from platform.train import checkpoints; print(checkpoints.name(3, 42, 1, True))"
    names = {subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout for _ in range(2)}
    assert len(names) == 2 and all(n.startswith("epoch_0003-step_0000042-attempt_1-") for n in names)


def test_a_write_that_fails_part_way_keeps_the_old_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    target.write_text('{"lr": 0.001}')

    def disk_full(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        durable.write_text(target, '{"lr": 0.002}')
    assert target.read_text() == '{"lr": 0.001}'
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no partial file left behind
    monkeypatch.undo()
    durable.write_text(target, '{"lr": 0.002}')
    assert target.read_text() == '{"lr": 0.002}'


def test_a_nan_epoch_is_never_the_best():
    class Result:  # what artifacts.finish reads of Ray Train's Result
        best_checkpoints = [
            ("nan", {"val/acc": float("nan")}),
            ("half", {"val/acc": 0.5}),
            ("inside", {"val/acc": -1e30, "partial": 1}),
            ("more", {"val/acc": 0.7}),
        ]
        checkpoint = "more"

    assert checkpoints.best_of_result(Result(), "val/acc", "max") == "more"
    assert checkpoints.best_of_result(Result(), "val/acc", "min") == "half"
    snapshot = {
        "checkpoint_results": [
            _result("epoch_0001-a", epoch=1, **{"val/acc": float("nan")}),
            _result("epoch_0002-a", epoch=2, **{"val/acc": 0.25}),
        ]
    }
    assert checkpoints.best(snapshot, "val/acc", "max")["dir"] == "epoch_0002-a"
