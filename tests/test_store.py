"""The preprocessed store: compact rows, refused shards, an interrupted preprocessing that continues.

.venv/bin/python -m pytest tests/test_store.py
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers import REPO, TEST_ENV, last_line, run_command

from platform import registry
from platform.config import resolve
from platform.data import ingest, store, stream
from platform.errors import UserError
from search_spaces.asl import TIERS
from trainables import asl

LENGTHS = [3, 7, 1, 5, 2]


def _write(folder, columns: dict) -> store.Split:
    """A one-shard split written the way a preprocessing task writes one."""
    specs = {name: store.column_spec(values) for name, values in columns.items()}
    payload = store.parquet_bytes(store.to_arrow(columns, specs), specs)
    fs, path = store.filesystem(str(folder))
    store.write_atomic(fs, store.join(path, store.shard_name(0)), payload)
    shard = {"file": store.shard_name(0), "rows": len(LENGTHS), "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    return store.Split(str(folder), store.write_manifest(str(folder), [shard], specs, {"test": True}))


def _columns() -> dict:
    rng = np.random.default_rng(0)
    return {
        "x": [rng.normal(size=(n, 4)).astype(np.float16) for n in LENGTHS],
        "image": rng.integers(0, 255, (len(LENGTHS), 1, 2, 2), dtype=np.uint8),
        "label": np.arange(len(LENGTHS), dtype=np.int64),
        "name": np.array([f"row{i}" for i in range(len(LENGTHS))]),
    }


def test_rows_are_stored_unpadded_and_narrow_and_batches_pad_to_their_longest(tmp_path):
    columns = _columns()
    split = _write(tmp_path / "split", columns)
    split.verify()
    assert pq.read_schema(tmp_path / "split" / store.shard_name(0)).field("x").type == pa.large_binary()
    assert split.manifest["columns"]["x"] == {"kind": "array", "dtype": "float16", "shape": [None, 4], "mask": True}
    first, second = stream.split_batches(split, batch_size=3)
    assert first["x"].shape == (3, 7, 4) and first["x"].dtype == torch.float32  # widened for training
    assert second["x"].shape == (2, 5, 4)
    assert first["x_mask"].sum(dim=1).tolist() == LENGTHS[:3]
    assert torch.equal(first["x"][1, :7], torch.from_numpy(columns["x"][1].astype(np.float32)))
    assert not first["x"][0, 3:].any(), "padding is zeros"
    assert first["image"].dtype == torch.uint8 and first["image"].shape == (3, 1, 2, 2)
    assert first["name"] == ["row0", "row1", "row2"] and second["label"].tolist() == [3, 4]


def test_a_corrupt_or_foreign_shard_is_refused(tmp_path):
    split = _write(tmp_path / "split", _columns())
    shard = tmp_path / "split" / store.shard_name(0)
    good = shard.read_bytes()

    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    shard.write_bytes(bytes(flipped))  # same size: only the hash can tell
    with pytest.raises(UserError, match="sha256"):
        split.read(0)

    # A planted file with a column Ray would unpickle (a binary column holding a pickle).
    foreign = pa.table(
        {"x": pa.array([b"\x80\x04K\x01."] * 5, pa.binary()), "image": [b""] * 5, "label": list(range(5)), "name": ["a"] * 5}
    )
    pq.write_table(foreign, shard)
    with pytest.raises(UserError, match="size|schema"):
        split.verify()

    manifest = json.loads((tmp_path / "split" / store.MANIFEST).read_text())
    manifest["columns"]["label"] = {"kind": "scalar", "dtype": "object"}
    (tmp_path / "split" / store.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="not a plain numeric type"):
        store.read_manifest(str(tmp_path / "split"))


def test_a_half_written_split_has_no_manifest_and_is_not_opened(tmp_path):
    (tmp_path / "split").mkdir()
    assert store.read_manifest(str(tmp_path / "split")) is None
    with pytest.raises(UserError, match="incomplete"):
        store.open_split(str(tmp_path / "split"))


def test_an_interrupted_preprocessing_writes_only_the_missing_shards(ray_address, tmp_path):
    cfg = resolve(asl.Config, {**TIERS["smoke"], "shard_rows": 8})
    root = str(tmp_path / "store")
    splits, _meta = ingest.prepare(registry.load("asl"), cfg, root)
    folder = tmp_path / "store" / splits["train"].uri.split("/store/", 1)[1]
    shards = sorted(folder.glob("shard-*.parquet"))
    assert len(shards) == 5  # 40 training rows in shards of 8
    before = json.loads((folder / store.MANIFEST).read_text())

    # As if the preprocessing had been killed: no manifest, two shards never written.
    (folder / store.MANIFEST).unlink()
    for lost in shards[1:3]:
        lost.unlink()
    kept = {path: path.stat().st_mtime_ns for path in shards if path.exists()}
    time.sleep(0.01)
    said: list[str] = []
    again, _meta = ingest.prepare(registry.load("asl"), cfg, root, say=said.append)
    assert any("3 of 5 shard(s) were already written" in line for line in said), said
    assert {path: path.stat().st_mtime_ns for path in kept} == kept, "whole shards are not written again"
    assert json.loads((folder / store.MANIFEST).read_text()) == before  # the same bytes, shard by shard
    assert again["train"].rows == 40


def test_a_run_refuses_a_damaged_store_in_one_line(ray_address, tmp_path):
    root = tmp_path / "store"
    args = ["asl", "--tier", "smoke", "--set", "epochs=1", "--store", str(root), "--storage", str(tmp_path / "runs")]
    assert run_command("run", *args, "--name", "first", address=ray_address).returncode == 0
    shard = next(root.glob("asl-*/train/shard-00000-*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-100])  # a torn write
    result = run_command("run", *args, "--name", "second", address=ray_address)
    assert result.returncode == 2
    assert last_line(result.stderr).startswith("error: store shard ") and "size" in last_line(result.stderr)
    assert not (tmp_path / "runs" / "asl" / "second").exists(), "nothing started"


def test_a_dataset_three_times_the_object_store_trains_without_spilling(synthetic_cache, tmp_path):
    """The whole split never enters Ray's object store: with about 85 MiB of it and 330 MB of rows,
    preprocessing and an epoch run without a byte spilled to disk."""
    cfg = resolve(asl.Config, TIERS["fast"])
    source = asl.synthetic_dataset(cfg)
    index = pd.read_csv(source / "train.csv")
    repeats = 10  # each file listed 10 times: 6,000 sequences, ~220k frames, 330 MB in float16
    big = pd.concat([index.assign(sequence_id=index["sequence_id"] * 10 + i) for i in range(repeats)])
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "train_landmark_files").symlink_to(source / "train_landmark_files")
    shutil.copy(source / "sign_to_prediction_index_map.json", folder)
    big.to_csv(folder / "train.csv", index=False)

    ray_tmp = Path(tempfile.mkdtemp(prefix="rp", dir="/tmp"))  # short: Ray's socket paths are bounded
    object_store = 85 * 2**20  # Ray's least is 75 MiB; it sizes the store from the memory available
    env = {k: v for k, v in {**os.environ, **TEST_ENV}.items() if k != "RAY_ADDRESS"}
    env.update(
        RAY_TMPDIR=str(ray_tmp), RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION=f"{object_store / psutil.virtual_memory().available:.8f}"
    )
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "platform.run",
                "asl",
                "--tier",
                "smoke",
                "--data",
                str(folder),
                "--set",
                "max_len=64",
                "--set",
                "epochs=1",
                "--set",
                "batch_size=64",
                "--set",
                "shard_rows=128",
                "--storage",
                str(tmp_path / "runs"),
                "--name",
                "big",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        manifest = json.loads((tmp_path / "runs" / "asl" / "big" / "manifest.json").read_text())
        capacity = manifest["hardware"]["cluster_resources"]["object_store_memory"]
        assert capacity <= 1.2 * object_store
        rows = manifest["data"]["rows"]["train"] + manifest["data"]["rows"]["val"]
        assert rows == len(big)
        splits = {name: store.open_split(s["uri"]) for name, s in manifest["data"]["store"].items()}
        frames = sum(int(batch["x_mask"].sum()) for split in splits.values() for batch in stream.split_batches(split, 512))
        assert frames * 744 * 2 >= 3 * capacity, (frames, capacity)
        # Ray starts its spill workers only to spill (and deletes spilled files at exit): their logs tell.
        spill_workers = list(ray_tmp.rglob("python-core-spill_worker-*.log"))
        assert list(ray_tmp.rglob("raylet.out")) and not spill_workers, spill_workers
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


PREPARE = """
import json, sys
import ray
from platform import registry
from platform.data import ingest
from platform.config import resolve
from search_spaces.asl import TIERS
from trainables import asl

ray.init(address=sys.argv[1], log_to_driver=False)
cfg = resolve(asl.Config, {**TIERS["smoke"], "shard_rows": 4})
splits, _meta = ingest.prepare(registry.load("asl"), cfg, sys.argv[2], say=lambda line: None)
for split in splits.values():
    split.verify()
    for index in range(len(split.shard_rows)):
        split.read(index)
print(json.dumps({name: split.uri for name, split in splits.items()}))
"""


def test_two_preprocessings_of_one_store_key_at_once_both_succeed_and_leave_one_store_that_verifies(ray_address, tmp_path):
    """Two sweep trials (two drivers on one cluster) preprocess the same data into the same store
    at the same time: both train on a store that reads back, and the store holds one manifest that
    verifies, every shard it names whole and matching its sha256."""
    root = tmp_path / "store"
    env = {**os.environ, **TEST_ENV}
    drivers = [
        subprocess.Popen(
            [sys.executable, "-c", PREPARE, ray_address, str(root)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [driver.communicate(timeout=300) for driver in drivers]
    assert [driver.returncode for driver in drivers] == [0, 0], [err[-3000:] for _out, err in outputs]
    uris = [json.loads(out.strip().splitlines()[-1]) for out, _err in outputs]
    assert uris[0] == uris[1] and len(list(root.iterdir())) == len(uris[0]), "one store key a split, one store"
    for uri in uris[0].values():
        split = store.open_split(uri)
        split.verify()
        assert sum(len(split.read(index)) for index in range(len(split.shard_rows))) == split.rows


def test_two_preprocessings_that_disagree_on_a_shards_bytes_never_replace_each_others_shard(tmp_path):
    """Two sweep trials preprocess one split at once on two kinds of CPU, whose floats differ in
    the last bits (max_len 8 and 9 stand in for them here): both tasks find the shard missing and
    write it; whichever manifest is written last, the store verifies and reads back, and so does
    the other trial's split, which it goes on training from."""
    cfg = resolve(asl.Config, {**TIERS["smoke"], "shard_rows": 8})
    rows, _meta = asl.build_datasets(cfg)
    uri = str(tmp_path / "split")
    batch = {
        "uri": np.array([uri], dtype=object),
        "index": np.array([0]),
        "rows": np.array([ingest._ipc(pa.Table.from_pylist(rows["train"][:8]))], dtype=object),
        "written": np.array(["[]"], dtype=object),  # what the driver listed: nothing yet
    }
    configs = [dataclasses.replace(cfg, max_len=length) for length in (8, 9)]
    with ThreadPoolExecutor(2) as pool:  # both tasks at once, as on two nodes
        records = [
            {key: values[0] for key, values in shard.items()}
            for shard in pool.map(lambda c: ingest._write_shards(batch, stem="asl", cfg=c), configs)
        ]
    assert records[0]["sha256"] != records[1]["sha256"], "the two writers disagree"
    splits = []
    for record in records:
        manifest = store.write_manifest(uri, ingest._shard_records([record]), json.loads(record["columns"]), {"test": True})
        splits.append(store.Split(uri, manifest))
        for split in (*splits, store.open_split(uri)):
            split.verify()
            assert split.read(0).num_rows == 8
