"""Runs stored in an object store: ``--storage s3://...`` against an S3 server on loopback (moto).

.venv/bin/python -m pytest tests/test_storage.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pyarrow.fs as pafs
import pytest
from helpers import TEST_ENV, free_port, run_command

from platform import storage as storage_lib

BUCKET = "runs-bucket"
SMOKE = ["asl", "--tier", "smoke", "--set", "epochs=4"]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """``python -m moto.server`` on a free loopback port, with an empty bucket."""
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=TEST_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=TEST_ENV["AWS_DEFAULT_REGION"],
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket=BUCKET)
            break
        except Exception:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.3)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    return s3_endpoint


def _listing(prefix: str) -> list[str]:
    filesystem, path = pafs.FileSystem.from_uri(f"s3://{BUCKET}/{prefix}")
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted(info.path.removeprefix(f"{path}/") for info in infos if info.type == pafs.FileType.File)


def _remote_json(key: str) -> dict:
    filesystem, path = pafs.FileSystem.from_uri(f"s3://{BUCKET}/{key}")
    with filesystem.open_input_stream(path) as stream:
        return json.loads(stream.read())


def test_a_run_writes_checkpoints_to_s3_and_recovers_a_lost_worker_from_them(ray_address, s3_env):
    storage = f"s3://{BUCKET}/runs"
    result = run_command("run", *SMOKE, "--storage", storage, "--name", "s3-run", "--fail-at-epoch", "3", address=ray_address)
    assert result.returncode == 0, result.stderr[-4000:]
    files = _listing("runs/asl/s3-run")
    assert any(name.startswith("epoch_0002") and name.endswith("/state.pt") for name in files), files
    assert {"config.json", "manifest.json", "history.csv", "best_model.pt"} <= set(files)
    assert any(name.startswith("tensorboard/events.out.tfevents") for name in files)
    manifest = _remote_json("runs/asl/s3-run/manifest.json")
    # The worker died at epoch 3 and came back from the epoch-2 checkpoint read from S3.
    assert manifest["status"] == "finished" and manifest["training"]["restarts"] == 1
    assert manifest["checkpoints"]["latest"].startswith(f"{BUCKET}/runs/asl/s3-run/")
    assert f"run directory: {storage}/asl/s3-run" in result.stdout
    # The preprocessed store sits beside the runs, written by Ray Data tasks and read by the workers.
    stored = _listing("runs/.store")
    for split in ("train", "val"):
        assert manifest["data"]["store"][split]["uri"].startswith(f"{storage}/.store/asl-")
        assert any(name.endswith(f"/{split}/manifest.json") for name in stored), stored
        assert any(f"/{split}/shard-" in name for name in stored), stored


def test_resume_on_a_machine_without_the_local_mirror_reads_everything_from_s3(ray_address, s3_env):
    storage = f"s3://{BUCKET}/runs"
    first = run_command("run", *SMOKE, "--storage", storage, "--name", "moved", address=ray_address)
    assert first.returncode == 0, first.stderr[-4000:]
    shutil.rmtree(storage_lib.mirror_root(storage))
    resumed = run_command("run", "asl", "--storage", storage, "--name", "moved", "--resume", address=ray_address)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "restored from" in resumed.stdout and "at epoch 4" in resumed.stdout
    manifest = _remote_json("runs/asl/moved/manifest.json")
    assert manifest["resumes"] == 1 and manifest["training"]["epochs_completed"] == 4


def test_an_unreachable_bucket_is_one_line_and_nothing_is_written(s3_env):
    result = run_command("run", *SMOKE, "--storage", "s3://no-such-bucket/runs", "--name", "x")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: --storage s3://no-such-bucket/runs/asl/x")
    assert len(result.stderr.strip().splitlines()) == 1
