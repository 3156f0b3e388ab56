"""Streaming batches out of the store: one rank's part of an epoch, or a whole split in order.

Used by each Ray Train worker of ``python -m platform.run asl`` (``platform/train/worker.py``) and by the
driver to score the test split. A worker holds at most two shuffle windows of shards at a time, so
a split far larger than memory or Ray's object store trains; the order comes from
``platform/train/exact.py``. Batches are padded to their own longest row; a column ``preprocess``
returned as a list of arrays gets a ``<name>_mask`` of its real rows. float16 columns are widened
to float32 here: stored narrow, trained in full precision (mixed precision is the loop's choice).
Batches are made by numpy alone, in a background thread (:func:`prefetched`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from platform.data.store import Split, column_spec, stored_dtype, to_arrow
from platform.errors import UserError
from platform.train import exact

PREFETCH_BATCHES = 4


class Window:
    """A window's shards as numpy columns, and the store row id of each row."""

    def __init__(self, specs: dict[str, dict], tables: list[pa.Table], ids: np.ndarray):
        table = pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0].combine_chunks()
        self.specs, self.ids = specs, ids
        self.columns: dict[str, Any] = {}
        for name, spec in self.specs.items():
            column = table.column(name).chunk(0) if table.column(name).num_chunks else pa.array([], table.schema.field(name).type)
            if spec["kind"] == "array":
                self.columns[name] = _elements(column, spec, name)
            elif spec["kind"] == "string":
                self.columns[name] = np.asarray(column.to_pylist(), dtype=object)
            else:
                self.columns[name] = column.to_numpy(zero_copy_only=False)

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> np.ndarray:
        """Each row's length along its first axis, from the first masked (variable-length) column."""
        for name, spec in self.specs.items():
            if spec["kind"] == "array" and spec["mask"]:
                offsets, _values = self.columns[name]
                return np.diff(offsets) // max(1, int(np.prod(spec["shape"][1:])))
        return np.zeros(len(self), dtype=np.int64)

    def subset(self, keep: np.ndarray) -> Window:
        """The rows where ``keep`` is true (a curriculum's unlocked rows)."""
        rows = np.flatnonzero(keep)
        kept = object.__new__(Window)
        kept.specs, kept.ids, kept.columns = self.specs, self.ids[rows], {}
        for name, spec in self.specs.items():
            if spec["kind"] == "array":
                offsets, values = self.columns[name]
                parts = [values[offsets[r] : offsets[r + 1]] for r in rows]
                sizes = np.array([len(p) for p in parts], dtype=np.int64)
                flat = np.concatenate(parts) if parts else values[:0]
                kept.columns[name] = (np.concatenate([[0], np.cumsum(sizes)]), flat)
            else:
                kept.columns[name] = self.columns[name][rows]
        return kept


def _elements(column: pa.LargeBinaryArray, spec: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A binary column of arrays as (element offsets, elements), without copying the bytes."""
    dtype, trailing = stored_dtype(spec), spec["shape"][1:]
    _validity, offset_bytes, data = column.buffers()
    offsets = np.frombuffer(offset_bytes, dtype=np.int64, count=len(column) + 1, offset=8 * column.offset)
    if np.any(np.diff(offsets) % (dtype.itemsize * int(np.prod(trailing)))):
        raise UserError(f"store column {name!r} holds a row that is not whole {spec['dtype']} rows of shape {trailing}")
    count = int(offsets[-1]) // dtype.itemsize
    values = np.frombuffer(data, dtype=dtype, count=count) if count else np.zeros(0, dtype)
    return offsets // dtype.itemsize, values


def collate(parts: list[tuple[Window, np.ndarray]]) -> dict[str, Any]:
    """One batch from rows of one or two windows: tensors padded to the batch's longest row."""
    specs = parts[0][0].specs
    batch: dict[str, Any] = {}
    for name, spec in specs.items():
        if spec["kind"] == "string":
            batch[name] = [value for window, rows in parts for value in window.columns[name][rows]]
            continue
        if spec["kind"] == "scalar":
            batch[name] = torch.from_numpy(np.concatenate([window.columns[name][rows] for window, rows in parts]))
            continue
        padded, lengths = _padded(spec, [(*window.columns[name], rows) for window, rows in parts])
        batch[name] = torch.from_numpy(padded)
        if spec["mask"]:
            batch[f"{name}_mask"] = torch.from_numpy(np.arange(padded.shape[1])[None, :] < lengths[:, None])
    return batch


def _padded(spec: dict, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Rows (element offsets, elements, row numbers) as one zero-padded array and their lengths.

    Numpy only: this runs in the prefetch thread, where a torch op would start a second OpenMP team
    that slows the training threads' own. One gather-scatter a window, not a copy a row: on two
    cores making the batch takes its time from training.
    """
    trailing = tuple(spec["shape"][1:])
    width = int(np.prod(trailing)) if trailing else 1
    lengths = np.concatenate([(offsets[rows + 1] - offsets[rows]) // width for offsets, _values, rows in parts])
    longest = int(lengths.max(initial=0))
    wide = np.float32 if spec["dtype"] == "float16" else np.dtype(spec["dtype"])
    padded = np.zeros((len(lengths), longest, width), dtype=wide)
    steps, first = np.arange(longest), 0
    for offsets, values, rows in parts:
        real = steps[None, :] < lengths[first : first + len(rows), None]
        sources = (offsets[rows] // width)[:, None] + steps[None, :]
        padded[first : first + len(rows)][real] = values.reshape(-1, width)[sources[real]]
        first += len(rows)
    return padded.reshape(len(lengths), longest, *trailing), lengths


def as_batch(preprocessed: dict[str, Any]) -> dict[str, Any]:
    """``preprocess``'s output as the batch training would see (stored, read back, padded), for
    a trainable's unit tests and one-off predictions."""
    specs = {name: column_spec(values) for name, values in preprocessed.items()}
    table = to_arrow(preprocessed, specs)
    rows = np.arange(table.num_rows)
    return collate([(Window(specs, [table], rows), rows)])


def _read_window(split: Split, shards: np.ndarray, bases: np.ndarray) -> Window:
    tables = [split.read(int(i)) for i in shards]
    ids = np.concatenate([bases[i] + np.arange(split.shard_rows[i]) for i in shards])
    return Window(split.specs, tables, ids)


def epoch_steps(
    split: Split,
    *,
    seed: int,
    epoch: int,
    world: int,
    batch_size: int,
    shards_per_window: int,
    bucket: bool,
    position: int = 0,
    keep: Callable[[Window], np.ndarray] | None = None,
) -> Iterator[tuple[np.ndarray, dict[int, Window]]]:
    """The epoch's global steps from ``position`` on: each an array of window-coded samples
    (``window << 32 | row``) and the windows they come from."""
    bases = np.concatenate([[0], np.cumsum(split.shard_rows)]).astype(np.int64)
    held: dict[int, Window] = {}

    def pieces() -> Iterator[np.ndarray]:
        offset, left = 0, position
        for index, shards in enumerate(exact.windows(len(split.shard_rows), shards_per_window, seed, epoch)):
            rows = int(sum(split.shard_rows[i] for i in shards))
            if keep is None and left >= rows:  # trained already: not even read
                left, offset = left - rows, offset + rows
                continue
            window = _read_window(split, shards, bases)
            if keep is not None:
                window = window.subset(np.asarray(keep(window), dtype=bool))
            order = exact.window_order(window.lengths(), seed, epoch, index, batch_size, offset, bucket)
            offset += len(order)
            held[index] = window
            coded = (np.int64(index) << 32) | order.astype(np.int64)
            if left >= len(coded):
                left -= len(coded)
                continue
            yield coded[left:]
            left = 0

    for step in exact.global_steps(pieces(), world, batch_size):
        yield step, held
        for stale in [k for k in held if k < int(step[-1] >> 32)]:  # later samples come from later windows
            del held[stale]


def rank_batches(split: Split, *, rank: int, world: int, **order: Any) -> Iterator[tuple[dict, np.ndarray, int]]:
    """This rank's batches of the epoch: (batch, store row ids, samples of the epoch trained after
    this step, counted over all ranks from the start of the epoch)."""
    done = order.get("position", 0)
    for step, held in epoch_steps(split, world=world, **order):
        part = exact.rank_part(step, world, rank)
        parts = [(held[int(w)], part[part >> 32 == w] & 0xFFFFFFFF) for w in np.unique(part >> 32)]
        done += len(step)
        yield collate(parts), np.concatenate([window.ids[rows] for window, rows in parts]), done


def split_batches(split: Split, batch_size: int, limit: int | None = None) -> Iterator[dict]:
    """A whole split in store order (validation, test), one shard at a time."""
    bases = np.concatenate([[0], np.cumsum(split.shard_rows)]).astype(np.int64)
    left = split.rows if limit is None else min(limit, split.rows)
    for index in range(len(split.shard_rows)):
        if left <= 0:
            return
        window = _read_window(split, np.array([index]), bases)
        for start in range(0, min(len(window), left), batch_size):
            rows = np.arange(start, min(start + batch_size, len(window), left))
            yield collate([(window, rows)])
        left -= len(window)


def prefetched(items: Iterator[Any], depth: int = PREFETCH_BATCHES) -> Iterator[Any]:
    """``items`` made by a background thread (reading and padding overlap the training step)."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            buffer.put(exc)
        buffer.put(done)

    thread = threading.Thread(target=produce, daemon=True, name="rayplatform-prefetch")
    thread.start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(0.05)
