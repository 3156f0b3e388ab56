"""Ray Data: a trainable's raw rows, preprocessed once by parallel tasks into the store.

Used by ``python -m platform.run asl`` (and every sweep trial) before training starts. Each split
is cut into shards of ``shard_rows`` raw rows; one Ray Data task per missing shard preprocesses it
and writes it straight to the store (``platform/data/store.py``), so the driver only ever holds the raw
rows (paths, texts, labels) and the shards' small records. A split is keyed by its content (see
:func:`identity`), so later runs and trials with the same data read it back without preprocessing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data
from ray.data.block import BlockAccessor

from platform import registry
from platform.config import to_dict
from platform.contract import Trainable
from platform.data import content_hash, store
from platform.data.cache import cache_root
from platform.errors import UserError

PREPROCESS_BATCH_ROWS = 16
# What meta's content_hash covers (platform/data/content_hash.py); runs from before it hashed paths and sizes.
CONTENT_HASH_OF = "file bytes"
# Training rows are stored in this fixed permutation, so every shard is a sample of the whole
# split and a shuffle window of a few shards mixes well even when the raw index is sorted.
STORE_ORDER_SEED = 20_240_601


@contextlib.contextmanager
def _quiet_ray_data():
    """Ray Data's error dumps (the command reports a bad file in one line); its log files under
    the Ray session keep everything."""
    logger = logging.getLogger("ray.data")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _every_core_to_the_map(bars: bool):
    """The shard job is one map whose outputs are a few bytes a shard; Ray Data's per-operator
    reservation would keep part of the CPUs for its downstream operators, which here do nothing:
    on 2 CPUs it ran the first tasks one at a time and the job took 1.3x the tasks' own time.
    ``bars``: its progress bar (shards written) for this job only."""
    context = ray.data.DataContext.get_current()
    reserved, shown = context.op_resource_reservation_enabled, context.enable_progress_bars
    context.op_resource_reservation_enabled, context.enable_progress_bars = False, bars
    try:
        yield
    finally:
        context.op_resource_reservation_enabled, context.enable_progress_bars = reserved, shown


def default_store_root() -> str:
    """The platform cache (only this user writes there); ``--store`` names a shared one."""
    return str(cache_root() / "store")


def preprocess_keys(trainable: Trainable, cfg: Any) -> list[str]:
    """The config keys ``preprocess`` depends on: the trainable's ``PREPROCESS_KEYS``, or every key
    when it names none (always right, rarely reused). With the raw rows' hash (which carries every
    key that changes the rows: split, seed, sampling, balance) this decides when data is reused."""
    declared = trainable.PREPROCESS_KEYS
    return sorted(declared if declared is not None else to_dict(cfg))


def identity(trainable: Trainable, cfg: Any, meta: dict, split: str, raw: pa.Table) -> dict[str, Any]:
    """What a split's store is keyed by. A trainable of the user's adds its code: it changes between
    runs (an edited ``preprocess``, another folder of the same name) without a config key saying so. A
    built-in's code changes only with the platform, reviewed, so its key is what it always was (its
    stores stay valid)."""
    values = to_dict(cfg)
    ident = {
        "format": store.FORMAT,
        "stem": trainable.stem,
        "split": split,
        "files": meta.get("content_hash"),
        "rows": _rows_digest(raw),
        "shard_rows": cfg.shard_rows,
        "preprocess": {key: values[key] for key in preprocess_keys(trainable, cfg)},
    }
    source = registry.find(trainable.stem)
    return ident if source.shipped is None else {**ident, "code": code_hash(source.folder)}


def code_hash(folder: Path) -> str:
    """The package's source: every ``*.py`` under ``folder`` by relative path, but its tests."""
    files = {
        str(path.relative_to(folder)): str(path)
        for path in folder.rglob("*.py")
        if not {"tests", "__pycache__"} & set(path.relative_to(folder).parts[:-1])
    }
    return content_hash.content_hash([], files)


def split_uri(root: str, ident: dict) -> str:
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return store.join(root, f"{ident['stem']}-{digest}", ident["split"])


def prepare(
    trainable: Trainable, cfg: Any, root: str | None = None, say=print, pinned: dict | None = None, bars: bool = False
) -> tuple[dict[str, store.Split], dict]:
    """Every split in the store (written where missing); ``meta`` gains rows and store records.
    ``pinned``, the meta a resumed run started with: the data must still be that data. ``bars``:
    Ray Data's progress bar of the shards being written."""
    started = time.perf_counter()
    raw_sets, meta = trainable.build_datasets(cfg)
    meta = {**meta, "content_hash_of": CONTENT_HASH_OF}
    if pinned is not None:
        _same_data(pinned, meta, say)
    if "train" not in raw_sets or "val" not in raw_sets:
        raise UserError(f"trainables.{trainable.stem}.build_datasets must return 'train' and 'val' splits")
    found: dict[str, dict] = {}
    missing: list[tuple[str, pa.Table, str, dict]] = []
    with _quiet_ray_data():
        for name, rows in raw_sets.items():
            raw = _raw_table(ray.data.from_items(list(rows)))
            if name == "train":
                raw = raw.take(np.random.default_rng(STORE_ORDER_SEED).permutation(raw.num_rows))
            ident = identity(trainable, cfg, meta, name, raw)
            uri = split_uri(root or default_store_root(), ident)
            manifest = store.read_manifest(uri)
            if manifest is None:
                missing.append((name, raw, uri, ident))
            else:
                found[name] = {"uri": uri, "manifest": manifest}
        found.update(_write_splits(trainable, cfg, missing, say, bars))
    splits = {name: store.Split(found[name]["uri"], found[name]["manifest"]) for name in raw_sets}
    for split in splits.values():
        split.verify()
    meta = {**meta, "rows": {name: split.rows for name, split in splits.items()}}
    meta["store"] = {name: store.describe(split) for name, split in splits.items()}
    empty = [name for name in ("train", "val") if meta["rows"][name] == 0]
    if empty:
        raise UserError(f"the {empty[0]} split is empty (data: {meta.get('data_path') or 'synthetic'})")
    meta["preprocess_s"] = round(time.perf_counter() - started, 2)
    return splits, meta


def _same_data(pinned: dict, meta: dict, say) -> None:
    """Before anything is preprocessed: a resume on changed files or classes would continue a
    model on data it never started with, and the run's lineage would say otherwise. A run started
    before files were hashed by content has a hash of another kind: its classes are compared."""
    keys = ["content_hash", "classes"]
    if pinned.get("content_hash_of") != meta["content_hash_of"]:
        keys.remove("content_hash")
        say("warning: this run's data was identified by its files' paths and sizes when it started; only its classes can be compared now")
    for key in keys:
        if pinned.get(key) != meta.get(key):
            raise UserError(
                f"the data changed since this run started (its {key} differs: {meta.get('data_path') or 'synthetic set'}): "
                "a resume trains on the data it started with; train a new run under another --name"
            )


def _raw_table(dataset: ray.data.Dataset) -> pa.Table:
    """A raw split's rows (small: paths, texts, labels) in their order."""
    tables = [ray.get(block) for block in dataset.to_arrow_refs()]
    tables = [t if isinstance(t, pa.Table) else BlockAccessor.for_block(t).to_arrow() for t in tables]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="default").combine_chunks()


def _rows_digest(table: pa.Table) -> str:
    if table.num_rows == 0:
        return "empty"
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema.remove_metadata()) as writer:
        writer.write_table(table.replace_schema_metadata(None))
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _write_splits(trainable: Trainable, cfg: Any, missing: list[tuple[str, pa.Table, str, dict]], say, bars: bool) -> dict:
    """One Ray Data task per shard of every missing split, all in one job so no core waits for a
    split's last shard; a shard a killed preprocessing left whole is kept as it is."""
    stem, size = trainable.stem, cfg.shard_rows
    pieces = []
    for name, raw, uri, _ident in missing:
        starts = range(0, raw.num_rows, size)
        say(f"[{stem}] preprocessing {name}: {raw.num_rows} rows in {len(starts)} shard(s) -> {uri}")
        written = store.written_shards(uri)
        pieces += [
            {
                "uri": uri,
                "index": i,
                "count": min(size, raw.num_rows - start),
                "rows": _ipc(raw.slice(start, size)),
                "written": json.dumps(written.get(i, [])),
            }
            for i, start in enumerate(starts)
        ]
    # Largest first: the short last shard of each split then fills a core's tail instead of
    # starting one after every full shard has (on 2 cores, 9% of a 2000-row job's time).
    pieces.sort(key=lambda piece: -piece["count"])
    records: list[dict] = []
    if pieces:
        with _every_core_to_the_map(bars):
            records = (
                ray.data.from_items(pieces, override_num_blocks=len(pieces))
                .map_batches(_write_shards, batch_size=1, fn_kwargs={"stem": trainable.stem, "cfg": cfg})
                .take_all()
            )
    kept = sum(bool(r["kept"]) for r in records)
    if kept:
        say(f"[{stem}] {kept} of {len(records)} shard(s) were already written (by an interrupted or a concurrent preprocessing): kept")
    written = {}
    for name, _raw, uri, ident in missing:
        mine = sorted((r for r in records if r["uri"] == uri), key=lambda r: int(r["index"]))
        written[name] = {"uri": uri, "manifest": store.write_manifest(uri, _shard_records(mine), _specs(mine), ident)}
    return written


def _specs(records: list[dict]) -> dict:
    specs = None
    for record in records:
        shard_specs = json.loads(record["columns"])
        specs = shard_specs if specs is None else {k: store.merge_specs(k, specs[k], shard_specs[k]) for k in specs}
    return specs or {}


def _shard_records(records: list[dict]) -> list[dict]:
    return [{"file": str(r["file"]), "rows": int(r["rows"]), "bytes": int(r["bytes"]), "sha256": str(r["sha256"])} for r in records]


def _write_shards(batch: dict[str, np.ndarray], *, stem: str, cfg: Any) -> dict[str, list]:
    """Ray Data task: preprocess each shard of the batch and write it, unless a whole one was
    already written (the driver listed them); return its small record."""
    module = registry.load(stem).package  # a trainable of the user's too: the job's runtime env ships it
    out: dict[str, list] = {"uri": [], "index": [], "file": [], "rows": [], "bytes": [], "sha256": [], "columns": [], "kept": []}
    for uri, index, payload, written in zip(batch["uri"], batch["index"], batch["rows"], batch["written"]):
        fs, path = store.filesystem(str(uri))
        raw = pa.ipc.open_stream(payload).read_all()
        found = _whole_shard(fs, path, json.loads(str(written)), raw.num_rows)
        out["kept"].append(found is not None)
        if found is None:
            columns, specs = _preprocess_shard(module, raw, cfg)
            data = store.parquet_bytes(store.to_arrow(columns, specs), specs)
            digest = hashlib.sha256(data).hexdigest()
            found = {"file": store.shard_name(int(index), digest), "bytes": len(data), "sha256": digest, "columns": specs}
            store.write_atomic(fs, store.join(path, found["file"]), data)
        out["uri"].append(str(uri))
        out["file"].append(found["file"])
        out["index"].append(int(index))
        out["rows"].append(raw.num_rows)
        out["bytes"].append(found["bytes"])
        out["sha256"].append(found["sha256"])
        out["columns"].append(json.dumps(found["columns"]))
    return out


def _whole_shard(fs, path: str, names: list[str], rows: int) -> dict | None:
    """The record of the first of ``names`` (files of this shard) that is whole."""
    for name in names:
        found = store.existing_shard(fs, store.join(path, name), rows)
        if found is not None:
            return {**found, "file": name}
    return None


def _preprocess_shard(module: ModuleType, raw: pa.Table, cfg: Any) -> tuple[dict[str, list], dict[str, dict]]:
    """``preprocess`` over the shard in small batches; every array column as a list of rows."""
    columns: dict[str, list] = {}
    specs: dict[str, dict] = {}
    for start in range(0, raw.num_rows, PREPROCESS_BATCH_ROWS):
        batch = BlockAccessor.for_block(raw.slice(start, PREPROCESS_BATCH_ROWS)).to_batch_format("numpy")
        for name, values in module.preprocess(batch, cfg).items():
            spec = store.column_spec(values)
            specs[name] = store.merge_specs(name, specs[name], spec) if name in specs else spec
            columns.setdefault(name, []).extend(list(values) if spec["kind"] == "array" else np.asarray(values).tolist())
    return columns, specs
