"""Exact resume from outside the process: SIGKILL at a random step, and a resume on another worker count.

    .venv/bin/python -m pytest tests/test_resume.py

Each run writes a trace (``RAYPLATFORM_TRACE_DIR``): one line a batch with the epoch, the position
in it and the store row ids. What a run trained is, for every (epoch, position, rank), the last
line written for it: a replay after a restart overwrites what the lost attempt saw.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import REPO, TEST_ENV

from platform.train import checkpoints

# 40 training sequences in 5 shards of 8, windows of 2 shards, batches of 4: 10 steps an epoch.
SMALL = [
    "asl",
    "--tier",
    "smoke",
    "--set",
    "epochs=6",
    "--set",
    "batch_size=4",
    "--set",
    "shard_rows=8",
    "--set",
    "shuffle_buffer=16",
    "--set",
    "checkpoint_every_steps=2",
    "--set",
    "dim=48",
]
# Torch's thread count changes float reduction order: every run of a comparison uses one CPU a worker.
ONE = [*SMALL, "--workers", "1", "--cpus-per-worker", "1"]
COMPARED = ("epoch", "train/loss", "train/acc", "val/loss", "val/acc", "lr")


def _trace(folder: Path) -> list[dict]:
    lines = []
    for path in sorted(folder.glob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def _trained(folder: Path) -> dict[tuple, list[int]]:
    """(epoch, position, rank) -> ids, the last written winning (files are per process, in start order)."""
    found: dict[tuple, list[int]] = {}
    for path in sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            found[(row["epoch"], row["position"], row["rank"])] = row["ids"]
    return found


def _history(run_dir: Path) -> list[dict]:
    return [{k: row[k] for k in COMPARED} for row in pd.read_csv(run_dir / "history.csv").to_dict("records")]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "best_model.pt", weights_only=True)["model"]


def _env(trace: Path, address: str) -> dict[str, str]:
    trace.mkdir(parents=True, exist_ok=True)
    return {**os.environ, **TEST_ENV, "RAY_ADDRESS": address, "RAYPLATFORM_TRACE_DIR": str(trace)}


def _start(args: list[str], trace: Path, address: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "platform.run", *args],
        cwd=REPO,
        env=_env(trace, address),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_for_batches(trace: Path, count: int, process: subprocess.Popen, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        lines = _trace(trace)
        if len(lines) >= count:
            return lines[-1]
        time.sleep(0.005)
    raise AssertionError(f"the run ended or stalled before batch {count}")


def _wait_for_checkpoints(run_dir: Path, count: int, process: subprocess.Popen, timeout: float = 300) -> None:
    """Until Ray Train has recorded ``count`` checkpoints of the run: it registers a reported one a
    poll later, and a kill before that restarts the run from scratch (a loaded machine shows it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if len(checkpoints.recorded(checkpoints.read_snapshot(str(run_dir)))) >= count:
            return
        time.sleep(0.005)
    raise AssertionError(f"the run ended or stalled before {count} checkpoint(s) were recorded")


def _run(args: list[str], trace: Path, address: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "platform.run", *args], cwd=REPO, env=_env(trace, address), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _same_run(run_dir: Path, reference: Path) -> None:
    assert _history(run_dir) == _history(reference)
    expected, found = _weights(reference), _weights(run_dir)
    assert all(torch.equal(expected[k], found[k]) for k in expected), "best_model.pt differs"


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("resume-runs")


@pytest.fixture(scope="module")
def straight(ray_address, storage, tmp_path_factory) -> tuple[Path, Path]:
    """The uninterrupted one-worker run, its directory and its trace."""
    trace = tmp_path_factory.mktemp("straight-trace")
    _run([*ONE, "--storage", str(storage), "--name", "straight-1"], trace, ray_address)
    return storage / "asl" / "straight-1", trace


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_sigkilled_at_a_random_step_ends_bitwise_identical(ray_address, storage, straight, tmp_path, workers):
    args = [*SMALL, "--workers", str(workers), "--cpus-per-worker", "1", "--storage", str(storage)]
    if workers == 2:  # 5 global steps an epoch: the third ends an accumulation, the fifth is the remainder
        # ... and the weights' average is validated and kept, so the checkpoints must carry it too.
        args += ["--set", "grad_accum_steps=3", "--set", "ema_decay=0.9"]
    if workers == 1:
        reference, reference_trace = straight
    else:
        reference, reference_trace = storage / "asl" / f"straight-{workers}", tmp_path / "straight"
        _run([*args, "--name", f"straight-{workers}"], reference_trace, ray_address)

    # From batch 5 on: a checkpoint (every 2 steps) exists by then, the trace being a batch ahead.
    target = random.Random().randint(5, 20) * workers  # batches over all ranks: a random step of epochs 1-4
    killed = _start([*args, "--name", f"killed-{workers}"], tmp_path / "killed", ray_address)
    _wait_for_batches(tmp_path / "killed", target, killed)
    _wait_for_checkpoints(storage / "asl" / f"killed-{workers}", 1, killed)
    victim = _trace(tmp_path / "killed")[-1]
    os.kill(victim["pid"], signal.SIGKILL)
    output, _ = killed.communicate(timeout=600)
    assert killed.returncode == 0, f"killed at batch {target}:\n{output[-4000:]}"
    assert "restored from" in output, output[-3000:]

    resumed = storage / "asl" / f"killed-{workers}"
    assert json.loads((resumed / "manifest.json").read_text())["training"]["restarts"] == 1
    _same_run(resumed, reference)
    assert _trained(tmp_path / "killed") == _trained(reference_trace), f"killed at batch {target}"


def test_a_worker_sigkilled_with_a_checkpoint_every_third_epoch_replays_exactly(ray_address, storage, straight, tmp_path):
    args = [*ONE, "--set", "checkpoint_every_steps=0", "--set", "checkpoint_every=3", "--storage", str(storage), "--name", "every-third"]
    killed = _start(args, tmp_path, ray_address)
    _wait_for_batches(tmp_path, random.Random().randint(31, 55), killed)  # a batch of epochs 4-6
    _wait_for_checkpoints(storage / "asl" / "every-third", 1, killed)
    victim = _trace(tmp_path)[-1]
    os.kill(victim["pid"], signal.SIGKILL)
    output, _ = killed.communicate(timeout=600)
    assert killed.returncode == 0, output[-4000:]
    # Epoch 3's end is checkpointed, later ones only when they are the best so far: whole epochs replay.
    restored = re.search(r"restored from \S+ at epoch (\d+) \(", output)
    assert restored and int(restored.group(1)) < victim["epoch"], output[-3000:]
    _same_run(storage / "asl" / "every-third", straight[0])
    assert _trained(tmp_path) == _trained(straight[1]), f"killed in epoch {victim['epoch']}"


def test_a_sigterm_to_a_worker_checkpoints_at_the_next_step_and_loses_nothing(ray_address, storage, straight, tmp_path):
    args = [*ONE, "--set", "checkpoint_every_steps=0", "--storage", str(storage), "--name", "worker-sigterm"]
    run = _start(args, tmp_path, ray_address)
    victim = _wait_for_batches(tmp_path, random.Random().randint(3, 15), run)
    os.kill(victim["pid"], signal.SIGTERM)
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 0, output[-4000:]
    assert "preempted: checkpoint written, worker exits (SIGTERM)" in output
    found = re.search(r"restored from \S+step_\d+\S* at epoch \d+, (\d+) samples into epoch", output)
    assert found and int(found.group(1)) > 0, output[-3000:]  # from the step the signal interrupted
    _same_run(storage / "asl" / "worker-sigterm", straight[0])


def test_a_sigterm_to_the_driver_leaves_a_checkpoint_at_the_next_step_to_resume(ray_address, storage, tmp_path):
    # 20 epochs (200 steps, a few seconds): on a loaded machine the signal reaches the driver, and the
    # driver's notice the workers, a second or more after it is sent, which 6 epochs do not outlast.
    args = [*ONE, "--set", "epochs=20", "--set", "checkpoint_every_steps=0", "--storage", str(storage)]
    _run([*args, "--name", "straight-20"], tmp_path / "straight", ray_address)
    driver = _start([*args, "--name", "driver-sigterm"], tmp_path / "first", ray_address)
    _wait_for_batches(tmp_path / "first", random.Random().randint(3, 15), driver)
    driver.send_signal(signal.SIGTERM)
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 143, output[-4000:]
    assert "preempted: checkpoint epoch_" in output and "--name driver-sigterm --resume" in output, output[-3000:]
    run_dir = storage / "asl" / "driver-sigterm"
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"

    resumed = _run(
        ["asl", "--storage", str(storage), "--name", "driver-sigterm", "--resume", "--cpus-per-worker", "1"],
        tmp_path / "second",
        ray_address,
    )
    assert re.search(r"at epoch \d+, \d+ samples into epoch", resumed.stdout + resumed.stderr), resumed.stderr[-3000:]
    _same_run(run_dir, storage / "asl" / "straight-20")


def test_a_resume_on_another_worker_count_trains_each_remaining_sample_once(ray_address, storage, tmp_path):
    args = [*SMALL, "--set", "checkpoint_every_steps=1", "--storage", str(storage), "--name", "regrown"]
    first = _start([*args, "--workers", "1"], tmp_path / "one", ray_address)
    _wait_for_batches(tmp_path / "one", random.Random().randint(14, 18), first)  # inside epoch 2
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()

    resumed = _run(
        ["asl", "--storage", str(storage), "--name", "regrown", "--resume", "--workers", "2", "--cpus-per-worker", "1"],
        tmp_path / "two",
        ray_address,
    )
    found = re.search(r"at epoch (\d+), (\d+) samples into epoch (\d+)", resumed.stdout + resumed.stderr)
    assert found, resumed.stderr[-3000:]
    position, epoch = int(found.group(2)), int(found.group(3))
    before = [ids for (e, p, _r), ids in _trained(tmp_path / "one").items() if e == epoch and p < position]
    after = {key: ids for key, ids in _trained(tmp_path / "two").items()}
    assert {key[2] for key in after} == {0, 1} and min(key[1] for key in after if key[0] == epoch) == position
    train_rows = json.loads((storage / "asl" / "regrown" / "manifest.json").read_text())["data"]["rows"]["train"]
    for trained_epoch in range(epoch, 7):
        ids = [i for (e, _p, _r), part in after.items() if e == trained_epoch for i in part]
        ids += [i for part in before for i in part] if trained_epoch == epoch else []
        assert sorted(ids) == list(range(train_rows)), f"epoch {trained_epoch} (resumed at {position} of {epoch})"


def test_a_torn_latest_checkpoint_falls_back_to_the_one_before_and_orphans_are_removed(ray_address, storage, straight, tmp_path):
    run_dir = storage / "asl" / "torn"
    driver = _start([*ONE, "--storage", str(storage), "--name", "torn"], tmp_path / "first", ray_address)
    _wait_for_batches(tmp_path / "first", random.Random().randint(9, 20), driver)  # after 4 step checkpoints
    _wait_for_checkpoints(run_dir, 2, driver)  # one to tear, one to fall back to
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    latest = checkpoints.recorded(checkpoints.read_snapshot(str(run_dir)))[0]["dir"]
    state = run_dir / latest / checkpoints.STATE_FILE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a full disk cut the write short
    orphan = run_dir / "epoch_0001-attempt_5-dead00"  # what a killed attempt leaves unrecorded
    orphan.mkdir()
    (orphan / checkpoints.STATE_FILE).write_bytes(b"half a checkpoint")

    resumed = _run(["asl", "--storage", str(storage), "--name", "torn", "--resume"], tmp_path / "second", ray_address)
    assert f"warning: checkpoint {latest} is unreadable" in resumed.stdout + resumed.stderr, resumed.stdout[-3000:]
    _same_run(run_dir, straight[0])
    assert not orphan.exists()
    recorded = {row["dir"] for row in checkpoints.recorded(checkpoints.read_snapshot(str(run_dir)))}
    assert set(checkpoints.folders(str(run_dir))) == recorded
