"""Ray Data: a trainable's raw datasets, preprocessed once in ``map_batches`` and materialised.

Used by ``python -m platform.run asl`` before training starts. Materialising once means every
epoch, worker restart and resumed run reads the same blocks in the same order (the basis of an
exact resume), and a malformed file is reported before any worker starts.
"""

from __future__ import annotations

import contextlib
import logging
import time
from types import ModuleType
from typing import Any

import ray.data

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
    with _quiet_ray_data():
        for split, dataset in raw.items():
            preprocessed = dataset.map_batches(
                trainable.preprocess, fn_kwargs={"cfg": cfg}, batch_size=PREPROCESS_BATCH_ROWS, batch_format="numpy"
            )
            # Block sizes shape the seeded shuffle, and Ray picks them from the free CPUs: fix them.
            ready[split] = preprocessed.repartition(target_num_rows_per_block=BLOCK_ROWS, strict=True).materialize()
    meta = {**meta, "rows": {split: dataset.count() for split, dataset in ready.items()}}
    empty = [split for split in ("train", "val") if meta["rows"][split] == 0]
    if empty:
        raise UserError(f"the {empty[0]} split is empty (data: {meta.get('data_path') or 'synthetic'})")
    meta["preprocess_s"] = round(time.perf_counter() - started, 2)
    return ready, meta
