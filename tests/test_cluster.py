"""A real multi-node Ray cluster on this machine: ``ray job submit`` of a training run, and the
loss of the node it trains on.

    .venv/bin/python -m pytest tests/test_cluster.py

A head (no CPUs: it runs the job drivers) and two 2-CPU worker nodes, each started with
``ray start`` as on a real cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
from helpers import REPO, TEST_ENV, free_port
from labeling import KEY, PRICES, write_posts
from openai_server import FakeOpenAI

from rayplatform import new

RAY = str(Path(sys.executable).with_name("ray"))


def cluster_env() -> dict[str, str]:
    """Nodes joining a head need token authentication asked for explicitly (the head turns it on).
    The nodes run in this environment, so a job's `python` is its interpreter, as under an active
    venv, but without the repository on PYTHONPATH: as on a node image with the platform installed,
    only a job's --working-dir or the platform itself puts it there. Read when called, so that they
    write synthetic sets into the session's cache."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return {
        **env,
        **TEST_ENV,
        "RAY_AUTH_MODE": "token",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }


def _ray(*args: str, timeout: float = 300, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], cwd=cwd, env=cluster_env(), capture_output=True, text=True, timeout=timeout)


def _start_node(*args: str) -> None:
    # Every node's agent needs its own port: the default one may belong to another Ray here.
    result = _ray("start", *args, f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats")
    assert result.returncode == 0, result.stderr[-3000:]


def _kill_processes_mentioning(text: str) -> None:
    for process in psutil.process_iter(["cmdline"]):
        if text in " ".join(process.info["cmdline"] or []):
            try:
                process.kill()
            except psutil.Error:
                pass


@pytest.fixture(scope="module")
def cluster(synthetic_cache) -> dict:
    # A short temp dir: Ray's socket paths must stay under the OS limit of about 100 characters.
    temp_dir = tempfile.mkdtemp(prefix="rp-ray-", dir="/tmp")
    port, dashboard_port = free_port(), free_port()
    try:
        _start_node(
            "--head",
            f"--port={port}",
            "--num-cpus=0",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            f"--temp-dir={temp_dir}",
        )
        for _ in range(2):
            _start_node(f"--address=127.0.0.1:{port}", "--num-cpus=2")
        yield {"dashboard": f"http://127.0.0.1:{dashboard_port}", "gcs": f"127.0.0.1:{port}", "temp_dir": temp_dir}
    finally:
        _kill_processes_mentioning(temp_dir)


def _submit(
    cluster: dict, *args: str, options: tuple[str, ...] = (), entry: tuple[str, ...] = ("python", "-m", "platform.run"), cwd: Path = REPO
) -> subprocess.CompletedProcess:
    """``ray job submit ... -- python -m platform.run ARGS`` from ``cwd`` (its working dir), as a user types it."""
    command = (
        "job",
        "submit",
        *options,
        "--address",
        cluster["dashboard"],
        "--working-dir",
        ".",
        "--runtime-env-json",
        json.dumps({"env_vars": TEST_ENV}),
        "--",
        *entry,
        *args,
    )
    return _until_an_agent_answers(lambda: _ray(*command, timeout=900, cwd=cwd))


def _until_an_agent_answers(submit) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + 120
    while True:
        result = submit()
        # A fresh head's job agent registers a few seconds after `ray start` returns.
        if "No available agent" not in result.stderr or time.monotonic() > deadline:
            return result
        time.sleep(2)


def test_the_readmes_job_submit_runs_as_written(cluster):
    """The README's one-machine command, in a shell without RAY_AUTH_MODE: only its address is this
    cluster's."""
    readme = (REPO / "README.md").read_text()
    line = next(text for text in readme.splitlines() if "ray job submit --address http://127.0.0.1:8265" in text)
    env = {k: v for k, v in cluster_env().items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    command = line.replace("http://127.0.0.1:8265", cluster["dashboard"])
    result = _until_an_agent_answers(
        lambda: subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "[asl] finished" in output and "succeeded" in output.lower(), output[-4000:]


def _listed(cluster: dict, what: str, *filters: str) -> list[dict]:
    """``ray list <what>`` of the cluster's state API, every state included."""
    options = [option for value in filters for option in ("--filter", value)]
    listed = _ray("list", what, "--address", cluster["dashboard"], *options, "--detail", "--format", "json", "--limit", "1000", timeout=60)
    assert listed.returncode == 0, listed.stderr[-2000:]
    return json.loads(listed.stdout or "[]")


def test_a_submitted_label_job_sends_from_the_drivers_node(cluster, tmp_path):
    """The driver's scan read the images where it runs, and only that node is sure to see them: the
    Labeler actors run there, even on a head without CPUs (where a submitted job's driver runs)."""
    folder = write_posts(tmp_path / "posts", [f"a post on the cluster {i}" for i in range(6)])
    with FakeOpenAI(key=KEY) as server:
        command = ("job", "submit", "--address", cluster["dashboard"], "--working-dir", ".")
        command += ("--runtime-env-json", json.dumps({"env_vars": TEST_ENV}), "--", "python", "-m", "platform.label", str(folder))
        result = _until_an_agent_answers(lambda: _ray(*command, "--base-url", server.url, *PRICES, "--actors", "2", timeout=600))
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        assert server.call_count == 6
    assert len(pd.read_csv(folder / "labeled" / "labels.csv")) == 6
    head = next(node["node_id"] for node in _listed(cluster, "nodes") if node["is_head_node"])
    labelers = [actor for actor in _listed(cluster, "actors") if "Labeler" in actor["class_name"]]
    assert labelers and {actor["node_id"] for actor in labelers} == {head}, labelers


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def test_the_installed_command_runs_as_a_job_without_a_working_dir(cluster, tmp_path):
    """``rayplatform run`` submitted from another folder, no code uploaded: the nodes' workers import
    the platform only because the driver puts its root first on their PYTHONPATH."""
    command = (
        "job",
        "submit",
        "--address",
        cluster["dashboard"],
        "--runtime-env-json",
        json.dumps({"env_vars": TEST_ENV}),
        "--",
        "rayplatform",
        "run",
        "asl",
        "--tier",
        "smoke",
        "--storage",
        str(tmp_path),
        "--store",
        str(tmp_path / "store"),
        "--name",
        "installed",
    )
    result = _until_an_agent_answers(
        lambda: subprocess.run([RAY, *command], cwd=tmp_path, env=cluster_env(), capture_output=True, text=True, timeout=900)
    )
    assert result.returncode == 0 and "succeeded" in (result.stdout + result.stderr).lower(), (result.stdout + result.stderr)[-4000:]
    manifest = _manifest(tmp_path / "asl" / "installed")
    assert manifest["status"] == "finished" and manifest["hardware"]["nodes"] == 3


def test_a_job_trains_a_trainable_of_the_users_from_its_working_dir(cluster, tmp_path):
    """``rayplatform new mytoy`` in a folder of the user's, submitted with that folder as the working
    dir: the Ray Data tasks and the Train worker on the worker nodes import mytoy, installed nowhere."""
    mine = tmp_path / "mine"
    mine.mkdir()
    new.write("mytoy", mine)
    run = ("./mytoy", "--tier", "smoke", "--storage", str(tmp_path / "runs"), "--store", str(tmp_path / "store"), "--name", "submitted")
    result = _submit(cluster, *run, entry=("rayplatform", "run"), cwd=mine)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "[mytoy] finished: 2 epochs" in output and "succeeded" in output.lower(), output[-4000:]
    manifest = _manifest(tmp_path / "runs" / "mytoy" / "submitted")
    assert (manifest["stem"], manifest["status"], manifest["hardware"]["nodes"]) == ("mytoy", "finished", 3)
    # The store on a folder every node sees: the worker nodes' Ray Data tasks write it, the Train worker reads it.
    for split in ("train", "val"):
        assert manifest["data"]["store"][split]["uri"].startswith(str(tmp_path / "store"))
        assert list((tmp_path / "store").glob(f"mytoy-*/{split}/shard-*.parquet"))
    assert (tmp_path / "runs" / "mytoy" / "submitted" / "best_model.pt").is_file()


def _job_status(cluster: dict, job_id: str) -> str:
    """ "succeeded", "failed", "stopped" once it ended ("Job 'x' succeeded"); else the CLI's text."""
    result = _ray("job", "status", "--address", cluster["dashboard"], job_id, timeout=60)
    text = (result.stdout + result.stderr).lower()
    return next((s for s in ("succeeded", "failed", "stopped") if f"' {s}" in text), text)


def _training_worker_pid(cluster: dict) -> int | None:
    listed = _ray(
        "list",
        "actors",
        "--address",
        cluster["dashboard"],
        "--filter",
        "class_name=RayTrainWorker",
        "--filter",
        "state=ALIVE",
        "--format",
        "json",
        timeout=60,
    )
    actors = json.loads(listed.stdout or "[]") if listed.returncode == 0 else []
    return actors[0]["pid"] if actors else None


def _without_timings(row: dict) -> dict:
    return {key: value for key, value in row.items() if key not in ("epoch_s", "restarts")}


EPOCHS = 60


def _kill_node_of(worker_pid: int) -> None:
    """The raylet that started that worker, and every process it started: the machine is gone."""
    raylet = psutil.Process(worker_pid).parent()
    assert "raylet" in " ".join(raylet.cmdline())
    for process in [*raylet.children(recursive=True), raylet]:
        try:
            process.kill()
        except psutil.Error:
            pass


def _latest_checkpoint_epoch(run_dir: Path) -> int:
    """The newest checkpoint's epoch (0 before the first). Older ones are pruned within an epoch
    (keep_checkpoints), so waiting for one epoch's folder can miss it."""
    epochs = [int(folder.name.split("-")[0].removeprefix("epoch_")) for folder in run_dir.glob("epoch_*-*")]
    return max(epochs, default=0)


def test_losing_the_training_node_continues_from_the_checkpoint_on_another(cluster, tmp_path):
    _start_node(f"--address={cluster['gcs']}", "--num-cpus=2")  # a spare node to fail over to
    run_dir = tmp_path / "asl" / "node-loss"
    job_id = f"node-loss-{time.time_ns()}"
    # Long enough that the node dies mid-run: a smoke epoch takes 0.2 s here.
    args = ("asl", "--tier", "smoke", "--set", f"epochs={EPOCHS}", "--cpus-per-worker", "1")
    submitted = _submit(cluster, *args, "--storage", str(tmp_path), "--name", "node-loss", options=("--no-wait", "--submission-id", job_id))
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    deadline = time.monotonic() + 600
    while _latest_checkpoint_epoch(run_dir) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    worker_pid = _training_worker_pid(cluster)
    assert worker_pid, _job_status(cluster, job_id)
    _kill_node_of(worker_pid)
    while time.monotonic() < deadline and _job_status(cluster, job_id) not in ("succeeded", "failed", "stopped"):
        time.sleep(2)
    logs = _ray("job", "logs", "--address", cluster["dashboard"], job_id, timeout=60).stdout
    assert _job_status(cluster, job_id) == "succeeded", logs[-4000:]
    manifest = _manifest(run_dir)
    assert manifest["status"] == "finished" and manifest["training"]["restarts"] >= 1
    assert manifest["training"]["epochs_completed"] == EPOCHS
    assert "restored from" in logs

    # The same run, never interrupted: the lost node cost time, not a single float.
    straight = _submit(cluster, *args, "--storage", str(tmp_path), "--name", "straight")
    assert straight.returncode == 0, (straight.stdout + straight.stderr)[-4000:]
    reference = _manifest(tmp_path / "asl" / "straight")
    assert [_without_timings(row) for row in manifest["history"]] == [_without_timings(row) for row in reference["history"]]
    found, expected = (torch.load(d / "best_model.pt", weights_only=True)["model"] for d in (run_dir, tmp_path / "asl" / "straight"))
    assert all(torch.equal(found[key], expected[key]) for key in expected)
