"""Runs stored in an object store: ``--storage s3://...`` against an S3 server on loopback (moto).

.venv/bin/python -m pytest tests/test_storage.py
"""

from __future__ import annotations

import json

import pyarrow.fs as pafs
from helpers import S3_BUCKET, run_command, upload

from platform import registry

BUCKET = S3_BUCKET
SMOKE = ["asl", "--tier", "smoke", "--set", "epochs=4"]


def _listing(prefix: str) -> list[str]:
    filesystem, path = pafs.FileSystem.from_uri(f"s3://{BUCKET}/{prefix}")
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted(info.path.removeprefix(f"{path}/") for info in infos if info.type == pafs.FileType.File)


def _remote_json(key: str) -> dict:
    filesystem, path = pafs.FileSystem.from_uri(f"s3://{BUCKET}/{key}")
    with filesystem.open_input_stream(path) as stream:
        return json.loads(stream.read())


def test_a_run_writes_checkpoints_to_s3_and_recovers_a_lost_worker_from_them(ray_address, s3_env):
    """All in the bucket, as on a cluster: the data (``--data s3://``), the store, the checkpoints."""
    _rows, meta = registry.load("asl").build_datasets(registry.resolve("asl", "smoke"))
    data = upload(meta["data_path"], "data/asl")
    storage = f"s3://{BUCKET}/runs"
    command = ["--storage", storage, "--data", data, "--name", "s3-run", "--fail-at-epoch", "3"]
    result = run_command("run", *SMOKE, *command, address=ray_address)
    assert result.returncode == 0, result.stderr[-4000:]
    files = _listing("runs/asl/s3-run")
    assert any(name.startswith("epoch_0002") and name.endswith("/state.pt") for name in files), files
    assert {"config.json", "manifest.json", "history.csv", "best_model.pt"} <= set(files)
    assert any(name.startswith("tensorboard/events.out.tfevents") for name in files)
    manifest = _remote_json("runs/asl/s3-run/manifest.json")
    # The worker died at epoch 3 and came back from the epoch-2 checkpoint read from S3.
    assert manifest["status"] == "finished" and manifest["training"]["restarts"] == 1
    assert manifest["data"]["data_path"] == data and manifest["data"]["content_hash"].startswith("sha256:")
    assert manifest["checkpoints"]["latest"].startswith(f"{BUCKET}/runs/asl/s3-run/")
    assert f"run directory: {storage}/asl/s3-run" in result.stdout
    # The preprocessed store sits beside the runs, written by Ray Data tasks and read by the workers.
    stored = _listing("runs/.store")
    for split in ("train", "val"):
        assert manifest["data"]["store"][split]["uri"].startswith(f"{storage}/.store/asl-")
        assert any(name.endswith(f"/{split}/manifest.json") for name in stored), stored
        assert any(f"/{split}/shard-" in name for name in stored), stored


def test_an_unreachable_bucket_is_one_line_and_nothing_is_written(s3_env):
    result = run_command("run", *SMOKE, "--storage", "s3://no-such-bucket/runs", "--name", "x")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: --storage s3://no-such-bucket/runs/asl/x")
    assert len(result.stderr.strip().splitlines()) == 1
