"""A run's folder on object storage, without Ray: the claim of a new run's name on S3 (a
conditional put), the mirror a new run starts from, and what the mirror takes from the bucket.

.venv/bin/python -m pytest tests/test_storage_claims.py
"""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from helpers import REPO, S3_BUCKET, Storage, last_line, run_command

from platform.data.cache import cache_root
from platform.errors import UserError
from platform.runs import run_files, storage
from platform.train import checkpoints


def _storage(tmp_path) -> str:
    return f"s3://{S3_BUCKET}/{tmp_path.name}"


def test_of_several_drivers_claiming_one_name_on_s3_at_once_exactly_one_wins(s3_env, tmp_path):
    location = storage.locate(_storage(tmp_path), "asl", "same")
    barrier, results = threading.Barrier(6), []

    def claim() -> None:  # as platform.run claims: this machine's lock on the run, then the claim
        barrier.wait()
        location = storage.locate(_storage(tmp_path), "asl", "same")
        held = run_files.hold(location.key)
        results.append(held is not None and location.claim())
        barrier.wait()  # every driver is still alive when the others try
        run_files.let_go(held)

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [False] * 5 + [True]
    assert location.exists(run_files.CLAIM_FILE)


def test_a_run_from_before_claims_on_s3_keeps_its_name(s3_env, tmp_path):
    Storage(_storage(tmp_path)).write("asl", "old", run_files.CONFIG_FILE, b"{}")
    assert not storage.locate(_storage(tmp_path), "asl", "old").claim()


def test_a_new_run_on_s3_starts_from_an_empty_mirror_and_releases_a_name_it_never_used(s3_env, tmp_path):
    location = storage.locate(_storage(tmp_path), "asl", "reused")
    location.local.mkdir(parents=True)
    for stale in (run_files.BEST_MODEL_FILE, run_files.HISTORY_FILE, "training_curves.png"):
        (location.local / stale).write_bytes(b"an earlier run's file, whose remote copy was deleted")
    assert location.claim()
    assert list(location.local.iterdir()) == []
    location.push()
    assert set(Storage(_storage(tmp_path)).contents("asl", "reused")) == {run_files.CLAIM_FILE}  # nothing stale uploaded
    location.release()
    assert Storage(_storage(tmp_path)).contents("asl", "reused") == {}
    assert storage.locate(_storage(tmp_path), "asl", "reused").claim()


def test_the_mirror_takes_the_runs_own_files_never_its_checkpoints_or_rays_snapshot(s3_env, tmp_path):
    remote = Storage(_storage(tmp_path))
    for name in (
        run_files.MANIFEST_FILE,
        "tensorboard/events.out.tfevents.1",
        checkpoints.SNAPSHOT_FILE,
        "epoch_0001-attempt_0-a/state.pt",
    ):
        remote.write("asl", "pulled", name, b"{}")
    location = storage.locate(_storage(tmp_path), "asl", "pulled")
    location.local.mkdir(parents=True)
    (location.local / "left-over.csv").write_text("from an earlier run of this name")
    location.pull()
    found = sorted(str(p.relative_to(location.local)) for p in location.local.rglob("*") if p.is_file())
    assert found == [run_files.MANIFEST_FILE, "tensorboard/events.out.tfevents.1"]


def test_a_missing_bucket_for_a_run_uri_is_one_error_line(s3_env):
    with pytest.raises(UserError, match="the bucket 'no-such-bucket' does not exist"):
        storage.fetched("s3://no-such-bucket/runs/asl/x")
    result = run_command("predict", "s3://no-such-bucket/runs/asl/x", "input.parquet")
    assert result.returncode == 2 and "the bucket 'no-such-bucket' does not exist" in last_line(result.stderr)


def test_a_store_in_a_missing_bucket_is_one_line_before_ray(s3_env, tmp_path):
    result = run_command("run", "asl", "--tier", "smoke", "--storage", str(tmp_path), "--store", "s3://no-such-bucket/store")
    assert (
        result.returncode == 2
        and last_line(result.stderr) == "error: --store s3://no-such-bucket/store: the bucket 'no-such-bucket' does not exist"
    )
    assert "Ray dashboard" not in result.stdout and not (tmp_path / "asl").exists()


def test_readers_of_one_s3_run_at_once_each_get_a_whole_copy_and_leave_none_behind(s3_env, tmp_path):
    remote = Storage(_storage(tmp_path))
    for name, data in ((run_files.MANIFEST_FILE, b'{"stem": "asl"}'), (run_files.BEST_MODEL_FILE, b"weights" * 1000)):
        remote.write("asl", "read", name, data)
    code = (
        "import sys; from platform.runs import storage\n"
        "for _ in range(8):\n"
        "    copy = storage.fetched(sys.argv[1])\n"
        "    assert (copy / 'best_model.pt').read_bytes() == b'weights' * 1000 and copy.parent.name == 'asl'\n"
    )
    (cache_root() / "fetched").mkdir(parents=True, exist_ok=True)
    before = set((cache_root() / "fetched").iterdir())  # this test process's own copies, if any
    readers = [
        subprocess.Popen([sys.executable, "-c", code, remote.run("asl", "read")], cwd=REPO, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    errors = [reader.communicate(timeout=120)[1] for reader in readers]
    assert [reader.returncode for reader in readers] == [0, 0, 0], errors
    assert set((cache_root() / "fetched").iterdir()) == before  # each reader removed its copies when it ended
