"""Local mode (``--workers 0``): the training function in the driver's process, with the run's files,
checkpoints, ``--resume`` and exact order of a one-worker run.

    .venv/bin/python -m pytest tests/test_local_mode.py
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, TEST_ENV, last_line, run_command

from platform.errors import UserError
from platform.launching import Launch
from platform.train import checkpoints, local

# 40 training sequences, batches of 4: 10 steps an epoch, a checkpoint every 2 (tests/test_resume.py's).
SMALL = ["asl", "--tier", "smoke", "--set", "epochs=4", "--set", "batch_size=4", "--set", "checkpoint_every_steps=2", "--set", "dim=48"]
# Torch's thread count changes the floats: both sides of a comparison train on one thread.
ONE_THREAD = ["--cpus-per-worker", "1"]
RUN_FILES = {"config.json", "manifest.json", "meta.json", "history.csv", "best_model.pt", "training_curves.png", "confusion_matrix.png"}


def test_local_mode_is_a_launch_and_a_restart_count_is_refused_with_it():
    assert Launch(workers=0).check().is_local and Launch(workers=0).world_size == 1
    assert Launch(workers=0, max_failures=0).check().restarts_allowed == 0
    assert Launch(workers=1).check().restarts_allowed == 3
    with pytest.raises(UserError, match="local mode \\(--workers 0\\) has no worker restarts"):
        Launch(workers=0, max_failures=2).check()
    with pytest.raises(UserError, match="--workers must be 0"):
        Launch(workers=-1).check()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0", "--max-failures", "1"], "error: --max-failures 1: local mode (--workers 0) has no worker restarts"),
        (["--workers", "-1"], "error: --workers must be 0 (local mode: in this process) or more"),
        (["--workers", "0", "--cpus-per-worker", "0"], "error: --cpus-per-worker must be positive"),
    ],
)
def test_bad_local_mode_options_end_with_one_error_line_before_ray_starts(args, message, tmp_path):
    result = run_command("run", "asl", "--tier", "smoke", *args, "--storage", str(tmp_path))
    assert result.returncode == 2 and last_line(result.stderr).startswith(message), result.stderr[-2000:]
    assert "Ray dashboard" not in result.stdout and not any(tmp_path.iterdir())


class _Seen:
    """A Ray Train callback: what the controller passed it."""

    def __init__(self):
        self.reports: list[tuple[dict, str | None]] = []

    def after_report(self, run_context, metrics, checkpoint):
        self.reports.append((metrics[0], checkpoint and Path(checkpoint.path).name))


def _report(epoch: int, score: float) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as folder:
        Path(folder, checkpoints.STATE_FILE).write_text(str(epoch))
        checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({"epoch": epoch, "val/acc": score}, checkpoint=checkpoint, checkpoint_dir_name=f"epoch_{epoch:04d}")


def _controller(storage: Path, seen: _Seen) -> local.Controller:
    import ray.train
    from ray.train.v2._internal.execution.storage import StorageContext

    keep_best = ray.train.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="val/acc", checkpoint_score_order="max")
    return local.Controller("run", StorageContext(str(storage), "run"), keep_best, [seen], threads=1)


def test_local_mode_keeps_checkpoints_as_ray_train_does_and_resumes_from_the_latest(tmp_path):
    seen = _Seen()
    result = _controller(tmp_path, seen).run(lambda: [_report(epoch, score) for epoch, score in ((1, 0.5), (2, 0.9), (3, 0.4))])

    assert seen.reports == [
        ({"epoch": 1, "val/acc": 0.5}, "epoch_0001"),
        ({"epoch": 2, "val/acc": 0.9}, "epoch_0002"),
        ({"epoch": 3, "val/acc": 0.4}, "epoch_0003"),
    ]
    # The best and the latest are kept, recorded in the snapshot --resume reads; the others are deleted.
    assert [row["dir"] for row in checkpoints.recorded(checkpoints.read_snapshot(str(tmp_path / "run")))] == ["epoch_0003", "epoch_0002"]
    assert checkpoints.folders(str(tmp_path / "run")) == ["epoch_0002", "epoch_0003"]
    assert Path(result.checkpoint.path).name == "epoch_0003" and Path(result.best_checkpoints[-1][0].path).name == "epoch_0002"

    def resumed() -> str:
        import ray.train

        return Path(ray.train.get_checkpoint().path).name

    assert _controller(tmp_path, _Seen()).run(resumed).return_value == "epoch_0003"


def test_a_local_mode_run_started_inside_a_running_event_loop_keeps_its_checkpoints(tmp_path):
    """A notebook's cell runs while the kernel's asyncio loop runs in the same thread."""
    import asyncio

    seen = _Seen()

    async def cell():
        return _controller(tmp_path, seen).run(lambda: [_report(epoch, score) for epoch, score in ((1, 0.5), (2, 0.9))])

    result = asyncio.run(cell())
    assert [name for _metrics, name in seen.reports] == ["epoch_0001", "epoch_0002"]
    assert Path(result.checkpoint.path).name == "epoch_0002"


def test_a_sigterms_timer_never_ends_a_later_local_run_of_the_same_process(monkeypatch):
    """A SIGTERM after a run's last step starts a timer; the next run in that notebook is not its to end."""
    import signal

    from platform.train import preempt

    ended = []
    monkeypatch.setattr(preempt, "DRIVER_WAIT_S", 0.2)
    monkeypatch.setattr(preempt, "_end_local", lambda saved: ended.append(saved))
    replaced = preempt.install_local_handler(lambda saved: None)
    try:
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # the signal, past the last step
        preempt.uninstall_driver_handler(None, None)  # the first run ends as it would
        preempt.install_local_handler(lambda saved: None)  # the second run starts
        time.sleep(0.6)
        assert ended == []
    finally:
        preempt.uninstall_driver_handler(None, replaced)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "best_model.pt", weights_only=True)["model"]


def _latest_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return checkpoints.read_state(str(run_dir), Path(manifest["checkpoints"]["latest"]).name)["model"]


def _same_weights(found: dict, expected: dict) -> bool:
    return found.keys() == expected.keys() and all(torch.equal(found[k], expected[k]) for k in expected)


def _run(*args: str, address: str) -> subprocess.CompletedProcess:
    result = run_command("run", *args, address=address)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def runs(ray_address, tmp_path_factory) -> Path:
    """The same run on one Ray Train worker and in local mode."""
    storage = tmp_path_factory.mktemp("local-mode")
    for workers in ("1", "0"):
        _run(*SMALL, *ONE_THREAD, "--workers", workers, "--storage", str(storage), "--name", f"workers-{workers}", address=ray_address)
    return storage / "asl"


def test_a_local_mode_run_writes_the_files_and_weights_of_a_one_worker_run(runs):
    local_run, worker_run = runs / "workers-0", runs / "workers-1"
    for run_dir in (local_run, worker_run):
        assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert checkpoints.folders(str(local_run)) and checkpoints.read_snapshot(str(local_run))
    assert (local_run / "history.csv").read_text().count("\n") == (worker_run / "history.csv").read_text().count("\n") == 5
    assert _same_weights(_weights(local_run), _weights(worker_run))
    assert _same_weights(_latest_weights(local_run), _latest_weights(worker_run))
    manifest = json.loads((local_run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["launch"] == {"workers": 0, "cpus_per_worker": 1.0, "gpu": False}
    assert manifest["training"]["restarts"] == 0


def _trace_lines(folder: Path) -> int:
    return sum(path.read_text().count("\n") for path in folder.glob("*.jsonl"))


def _start_and_wait(runs: Path, name: str, target: int, trace: Path, address: str) -> subprocess.Popen:
    """A local-mode run of ``SMALL``, once it trained ``target`` batches and recorded a checkpoint."""
    env = {**os.environ, **TEST_ENV, "RAY_ADDRESS": address, "RAYPLATFORM_TRACE_DIR": str(trace)}
    args = [*SMALL, *ONE_THREAD, "--workers", "0", "--storage", str(runs.parent), "--name", name]
    run = subprocess.Popen(
        [sys.executable, "-m", "platform.run", *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 300
    while run.poll() is None and time.monotonic() < deadline:
        if _trace_lines(trace) >= target and checkpoints.recorded(checkpoints.read_snapshot(str(runs / name))):
            return run
        time.sleep(0.005)
    raise AssertionError(f"the run ended or stalled before batch {target}")


def _resume_matches_one_worker(runs: Path, name: str, address: str, why: str) -> None:
    resumed = _run("asl", "--workers", "0", *ONE_THREAD, "--storage", str(runs.parent), "--name", name, "--resume", address=address)
    assert "restored from" in resumed.stdout, resumed.stdout[-3000:]
    manifest = json.loads((runs / name / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["training"]["restarts"] == 1
    assert _same_weights(_weights(runs / name), _weights(runs / "workers-1")), why
    assert _same_weights(_latest_weights(runs / name), _latest_weights(runs / "workers-1")), why


def test_a_local_mode_run_sigkilled_at_a_random_step_resumes_bitwise(runs, ray_address, tmp_path):
    target = random.Random().randint(5, 35)  # a batch of epochs 1-4, after a checkpoint
    run = _start_and_wait(runs, "killed-local", target, tmp_path, ray_address)
    run.send_signal(signal.SIGKILL)  # the training process itself: local mode has no worker to lose
    run.communicate(timeout=60)
    _resume_matches_one_worker(runs, "killed-local", ray_address, f"killed at batch {target}")


def test_a_sigterm_to_a_local_mode_run_checkpoints_at_the_next_step_and_resumes_bitwise(runs, ray_address, tmp_path):
    target = random.Random().randint(3, 25)  # well before the last step, after which there is no next one
    run = _start_and_wait(runs, "sigterm-local", target, tmp_path, ray_address)
    run.send_signal(signal.SIGTERM)
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 143, output[-3000:]
    assert "preempted: checkpoint epoch_" in output and "--name sigterm-local --resume --workers 0" in output, output[-3000:]
    assert json.loads((runs / "sigterm-local" / "manifest.json").read_text())["status"] == "interrupted"
    _resume_matches_one_worker(runs, "sigterm-local", ray_address, f"SIGTERM at batch {target}")
