"""A real multi-node Ray cluster on this machine: ``ray job submit`` of a training run.

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
from pathlib import Path

import psutil
import pytest
from conftest import REPO, TEST_ENV, free_port

RAY = str(Path(sys.executable).with_name("ray"))
# Nodes joining a head need token authentication asked for explicitly (the head turns it on).
# The nodes run in this environment, so a job's `python` is its interpreter, as under an active venv.
CLUSTER_ENV = {
    **os.environ, **TEST_ENV, "RAY_AUTH_MODE": "token", "PYTHONPATH": str(REPO),
    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
}
JOB_ENV = json.dumps({"env_vars": {**TEST_ENV, "RAYPLATFORM_CACHE": os.environ.get("RAYPLATFORM_CACHE", "")}})


def _ray(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], cwd=REPO, env=CLUSTER_ENV, capture_output=True, text=True, timeout=timeout)


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
        _start_node("--head", f"--port={port}", "--num-cpus=0", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dashboard_port}", f"--temp-dir={temp_dir}")
        for _ in range(2):
            _start_node(f"--address=127.0.0.1:{port}", "--num-cpus=2")
        yield {"dashboard": f"http://127.0.0.1:{dashboard_port}", "temp_dir": temp_dir}
    finally:
        _kill_processes_mentioning(temp_dir)


def _submit(cluster: dict, *args: str) -> subprocess.CompletedProcess:
    return _ray(
        "job", "submit", "--address", cluster["dashboard"], "--working-dir", ".", "--runtime-env-json", JOB_ENV,
        "--", "python", "-m", "platform.run", *args, timeout=900,
    )


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def test_a_submitted_job_trains_and_writes_its_run_directory(cluster, tmp_path):
    result = _submit(cluster, "asl", "--tier", "smoke", "--storage", str(tmp_path), "--name", "submitted")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "succeeded" in (result.stdout + result.stderr).lower()
    manifest = _manifest(tmp_path / "asl" / "submitted")
    assert manifest["status"] == "finished" and manifest["hardware"]["nodes"] == 3
    assert (tmp_path / "asl" / "submitted" / "best_model.pt").is_file()
