"""``platform.monitor`` on run directories a crash or a checkpoint inside an epoch left behind, without Ray.

.venv/bin/python -m pytest tests/test_monitor_files.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import REPO

from platform import checkpoints, monitor


def _run_dir(root: Path, name: str, snapshot: dict | None = None) -> Path:
    run_dir = root / "asl" / name
    run_dir.mkdir(parents=True)
    manifest = {"stem": "asl", "tier": "smoke", "status": "finished", "config": {"epochs": 5}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    if snapshot is not None:
        (run_dir / checkpoints.SNAPSHOT_FILE).write_text(json.dumps(snapshot))
    return run_dir


def _result(metrics: dict, name: str) -> dict:
    return {"metrics": metrics, "checkpoint_dir_name": name}


def test_a_checkpoint_inside_an_epoch_shows_the_epoch_before_it(tmp_path):
    epoch = _result({"epoch": 2, "val/acc": 0.75, "epoch_s": 1.0, "restarts": 0}, "epoch_0002-attempt_0")
    inside = _result(
        {"epoch": 2, "step": 13, "position": 40, "partial": 1, "val/acc": -1e30, "restarts": 0}, "epoch_0002-step_0000013-attempt_0"
    )
    _run_dir(tmp_path, "inside", {"checkpoint_results": [epoch, inside], "latest_checkpoint_result": inside})
    shown = monitor.report(tmp_path, monitor.GpuWatch())
    assert "epoch 2/5" in shown and "best val/acc 0.7500" in shown and "latest: val/acc 0.7500\n" in shown
    assert "latest epoch_0002-step_0000013-attempt_0" in shown


def test_a_broken_manifest_is_listed_as_broken_beside_the_others(tmp_path):
    _run_dir(tmp_path, "good")
    (_run_dir(tmp_path, "torn") / "manifest.json").write_text('{"stem": "asl", "tier"')
    shown = monitor.report(tmp_path, monitor.GpuWatch())
    assert "asl/good  [finished]" in shown
    assert "asl/torn  [broken]  JSONDecodeError" in shown


def test_the_monitor_reads_a_run_without_importing_torch_ray_or_the_trainable(tmp_path):
    """A person waits for it: the run's metric comes from its manifest, the rest from JSON files."""
    epoch = _result({"epoch": 3, "val/acc": 0.5, "epoch_s": 2.0, "restarts": 0}, "epoch_0003-attempt_0")
    run_dir = _run_dir(tmp_path, "light", {"checkpoint_results": [epoch]})
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["metric"] = {"name": "val/acc", "mode": "max"}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    code = (
        "import sys; from platform import monitor; info = monitor.describe_run(__import__('pathlib').Path(sys.argv[1])); "
        "print(info['metric'], info['best'], info['epoch'], "
        "[m for m in ('torch', 'ray', 'trainables', 'matplotlib') if m in sys.modules])"
    )
    shown = subprocess.run([sys.executable, "-c", code, str(run_dir)], cwd=REPO, capture_output=True, text=True, check=True)
    assert shown.stdout.split() == ["val/acc", "0.5", "3", "[]"]
