"""Ray Data: a trainable's raw datasets, preprocessed once in ``map_batches`` and materialised.

Used by ``python -m platform.run asl`` before training starts. Materialising once means every
epoch, worker restart and resumed run reads the same blocks in the same order (the basis of an
exact resume), and a malformed file is reported before any worker starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from platform.cache import cache_root, write_once
from platform.errors import UserError

PREPROCESS_BATCH_ROWS = 16
BLOCK_ROWS = 64


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


def prepare(trainable: ModuleType, cfg: Any) -> tuple[dict[str, ray.data.Dataset], dict[str, Any]]:
    """Build, preprocess and materialise every split; ``meta`` gains each split's row count."""
    started = time.perf_counter()
    raw, meta = trainable.build_datasets(cfg)
    if "train" not in raw or "val" not in raw:
        raise UserError(f"{trainable.__name__}.build_datasets must return 'train' and 'val' splits")
    ready: dict[str, ray.data.Dataset] = {}
    # Blocks in input order, not completion order: a resumed run must see the same data order.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    cached: dict[str, str] = {}
    with _quiet_ray_data():
        for split, dataset in raw.items():
            preprocessed = dataset.map_batches(
                trainable.preprocess, fn_kwargs={"cfg": cfg}, batch_size=PREPROCESS_BATCH_ROWS, batch_format="numpy"
            )
            if hasattr(trainable, "PREPROCESS_KEYS"):
                folder = _cache_folder(trainable, cfg, meta, dataset)
                preprocessed = _read_blocks(write_once(folder, lambda partial: _write_blocks(preprocessed, partial)))
                cached[split] = str(folder)
            # Block sizes shape the seeded shuffle, and Ray picks them from the free CPUs: fix them.
            ready[split] = preprocessed.repartition(target_num_rows_per_block=BLOCK_ROWS, strict=True).materialize()
    meta = {**meta, "rows": {split: dataset.count() for split, dataset in ready.items()}}
    if cached:
        meta["preprocessed_cache"] = cached
    empty = [split for split in ("train", "val") if meta["rows"][split] == 0]
    if empty:
        raise UserError(f"the {empty[0]} split is empty (data: {meta.get('data_path') or 'synthetic'})")
    meta["preprocess_s"] = round(time.perf_counter() - started, 2)
    return ready, meta


def _cache_folder(trainable: ModuleType, cfg: Any, meta: dict, raw: ray.data.Dataset) -> Path:
    """Where a split preprocessed by a trainable that names its ``PREPROCESS_KEYS`` is kept: beside
    the data when that folder is writable, so every run and trial with the same raw rows (and files
    behind them) and the same values of those keys reuses one costly preprocessing."""
    identity = {
        "stem": trainable.__name__,
        "files": meta.get("content_hash"),
        "rows": _rows_digest(raw),
        **{key: getattr(cfg, key) for key in trainable.PREPROCESS_KEYS},
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]
    name = f"{trainable.__name__.rsplit('.', 1)[-1]}-{digest}"
    data_path = Path(meta.get("data_path") or "")
    if meta.get("data_path") and data_path.is_dir() and os.access(data_path, os.W_OK):
        return data_path / ".preprocessed" / name
    return cache_root() / "preprocessed" / name


def _rows_digest(dataset: ray.data.Dataset) -> str:
    """A hash of a raw split's rows (paths, texts, labels: small), whatever its blocks."""
    tables = [ray.get(block) for block in dataset.to_arrow_refs()]
    if not tables:
        return "empty"
    table = pa.concat_tables(tables, promote_options="default").combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema.remove_metadata()) as writer:
        writer.write_table(table.replace_schema_metadata(None))
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _write_blocks(dataset: ray.data.Dataset, folder: Path) -> None:
    """From the driver, block by block: on a cluster the workers may not share this disk."""
    for index, block in enumerate(dataset.to_arrow_refs()):
        pq.write_table(ray.get(block), folder / f"{index:05d}.parquet")


def _read_blocks(folder: Path) -> ray.data.Dataset:
    tables = [pq.read_table(path) for path in sorted(folder.glob("*.parquet"))]
    return ray.data.from_arrow(tables) if tables else ray.data.from_items([])
