"""Data identity is content: a file rewritten at the same size (its mtime even set back) is new data,
for the preprocessed store's key and for a resume; an unchanged file is hashed once.

.venv/bin/python -m pytest tests/test_data_identity.py
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from helpers import REPO, S3_BUCKET, TEST_ENV

from platform import registry
from platform.data import content_hash, ingest
from platform.data.cache import cache_root
from platform.errors import UserError


@pytest.fixture
def asl_folder(tmp_path) -> Path:
    """A copy of asl's synthetic smoke set, ours to rewrite."""
    _rows, meta = registry.load("asl").build_datasets(registry.resolve("asl", "smoke"))
    return Path(shutil.copytree(meta["data_path"], tmp_path / "asl"))


def rewrite_in_place(path: Path) -> None:
    """Another byte in the middle of the file, the size and the mtime as they were: what a
    same-size rewrite (or one that restores its timestamps, as ``cp -p`` or ``rsync`` do) leaves."""
    before = path.stat()
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    path.write_bytes(bytes(payload))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def store_key(cfg, meta: dict, rows: dict) -> str:
    trainable = registry.load("asl")
    return ingest.split_uri("store", ingest.identity(trainable, cfg, meta, "train", pa.Table.from_pylist(rows["train"])))


def test_a_file_rewritten_at_the_same_size_and_mtime_is_new_data_for_the_store_and_a_resume(asl_folder):
    trainable, cfg = registry.load("asl"), registry.resolve("asl", "smoke", data_dir=str(asl_folder))
    rows, meta = trainable.build_datasets(cfg)
    rewrite_in_place(next(asl_folder.glob("train_landmark_files/*/*.parquet")))
    new_rows, new_meta = trainable.build_datasets(cfg)
    assert new_rows == rows, "the same paths, sizes and mtimes"
    assert new_meta["content_hash"] != meta["content_hash"]
    assert store_key(cfg, new_meta, new_rows) != store_key(cfg, meta, rows), "preprocessed again, not read from the store"
    # A resume pinned to the data it started with is refused before anything is preprocessed.
    with pytest.raises(UserError, match="the data changed since this run started"):
        ingest.prepare(trainable, cfg, pinned={**meta, "content_hash_of": ingest.CONTENT_HASH_OF})  # as its meta.json holds it


def test_an_unchanged_file_is_looked_up_not_read_again(tmp_path):
    """The cache answers for a file whose path, size, mtime, inode and ctime are unchanged (a digest
    planted in it is what comes back); a rewrite is hashed again whatever its mtime says."""
    file = tmp_path / "a.bin"
    file.write_bytes(b"first contents")
    first = content_hash.file_digests([str(file)])[str(file)]
    with sqlite3.connect(cache_root() / content_hash.CACHE_FILE) as cache:
        cache.execute("UPDATE digests SET digest = 'sha256:planted' WHERE path = ?", (str(file),))
    assert content_hash.file_digests([str(file)])[str(file)] == "sha256:planted"
    rewrite_in_place(file)
    again = content_hash.file_digests([str(file)])[str(file)]
    assert again not in ("sha256:planted", first)


def test_a_cache_that_is_not_a_database_is_started_again(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYPLATFORM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / content_hash.CACHE_FILE).write_bytes(b"torn by a full disk" * 100)
    file = tmp_path / "a.bin"
    file.write_bytes(b"contents")
    digest = content_hash.file_digests([str(file)])[str(file)]
    assert digest.startswith("sha256:")
    with sqlite3.connect(tmp_path / "cache" / content_hash.CACHE_FILE) as cache:
        assert cache.execute("SELECT digest FROM digests").fetchall() == [(digest,)]


HASH = """
import json, sys
from platform.data import content_hash
print(json.dumps(content_hash.file_digests(sys.argv[1:])))
"""


def test_two_processes_hashing_at_once_agree_and_share_one_cache(tmp_path):
    files = []
    for index in range(200):
        files.append(tmp_path / f"f{index}.bin")
        files[-1].write_bytes(os.urandom(20_000))
    env = {**os.environ, **TEST_ENV, "RAYPLATFORM_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-c", HASH, *map(str, files)]
    hashers = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [hasher.communicate(timeout=120) for hasher in hashers]
    assert [hasher.returncode for hasher in hashers] == [0, 0], [err for _out, err in outputs]
    first, second = (json.loads(out) for out, _err in outputs)
    assert first == second and len(set(first.values())) == len(files)
    with sqlite3.connect(tmp_path / "cache" / content_hash.CACHE_FILE) as cache:
        assert dict(cache.execute("SELECT path, digest FROM digests").fetchall()) == first


def test_an_object_rewritten_at_the_same_size_has_another_etag(s3_env):
    remote, path = pafs.FileSystem.from_uri(f"s3://{S3_BUCKET}/identity/a.bin")
    uri = f"s3://{S3_BUCKET}/identity/a.bin"
    hashes = []
    for payload in (b"first contents", b"other contents"):
        with remote.open_output_stream(path) as stream:
            stream.write(payload)
        hashes.append(content_hash.content_hash([], {"a.bin": uri}))
    assert hashes[0] != hashes[1]
    assert content_hash.file_digests([uri])[uri].startswith("etag:")


def test_a_run_from_before_content_hashes_resumes_on_its_classes_with_a_warning():
    said = []
    started = {"content_hash": "sha256:of-paths-and-sizes", "classes": ["a", "b"]}  # no "content_hash_of"
    now = {"content_hash": "sha256:of-bytes", "classes": ["a", "b"], "content_hash_of": ingest.CONTENT_HASH_OF}
    ingest._same_data(started, now, said.append)
    assert said and said[0].startswith("warning: this run's data was identified by its files' paths and sizes")
    with pytest.raises(UserError, match="its classes differs"):
        ingest._same_data({**started, "classes": ["a"]}, now, said.append)
    with pytest.raises(UserError, match="its content_hash differs"):
        ingest._same_data({**now, "content_hash": "sha256:other-bytes"}, now, said.append)
