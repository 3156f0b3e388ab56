"""``platform.monitor`` on run directories a crash or a checkpoint inside an epoch left behind, without Ray.

.venv/bin/python -m pytest tests/test_monitor_files.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
from helpers import REPO

from platform import monitor
from platform.train import checkpoints


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


def _started_here(root: Path, name: str) -> Path:
    """A run directory whose manifest ``artifacts.start`` wrote in this process, as a driver does."""
    from platform import registry
    from platform.runs import artifacts

    trainable = registry.load("asl")
    run_dir = root / "asl" / name
    artifacts.start(
        run_dir,
        trainable,
        tier="smoke",
        cfg=trainable.Config(),
        meta={},
        hardware={"host": os.uname().nodename},
        resumed=False,
        dashboard=None,
    )
    return run_dir


def _edit_manifest(run_dir: Path, **fields) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({**manifest, **fields}))


def test_a_run_whose_driver_lives_is_running_whatever_its_command_line(tmp_path):
    """This test process started it: its command line has no ``platform.run``, as ``rayplatform run``
    and a notebook's have none."""
    assert "platform.run" not in " ".join(psutil.Process().cmdline())
    _started_here(tmp_path, "alive")
    assert "asl/alive  [running]" in monitor.report(tmp_path, monitor.GpuWatch())


def test_a_run_whose_driver_ended_or_whose_pid_was_reused_is_interrupted(tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    _edit_manifest(_started_here(tmp_path, "ended"), pid=int(ended.stdout))
    reused = _started_here(tmp_path, "reused")  # this process has its pid now, started later than its driver
    _edit_manifest(reused, pid_started=json.loads((reused / "manifest.json").read_text())["pid_started"] - 3600)
    shown = monitor.report(tmp_path, monitor.GpuWatch())
    assert "asl/ended  [interrupted]" in shown and "asl/reused  [interrupted]" in shown
    assert shown.count("the driver is gone") == 2


def test_a_manifest_from_before_start_times_is_still_judged_by_its_command_line(tmp_path):
    run_dir = _started_here(tmp_path, "older")
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "platform.run"])
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
        del manifest["pid_started"]
        (run_dir / "manifest.json").write_text(json.dumps({**manifest, "pid": driver.pid}))
        assert "asl/older  [running]" in monitor.report(tmp_path, monitor.GpuWatch())
    finally:
        driver.kill()
        driver.wait()
    assert "asl/older  [interrupted]" in monitor.report(tmp_path, monitor.GpuWatch())
