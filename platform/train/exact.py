"""The rules that make a run exact: sample order, rank slices, seeds and the position in an epoch.

Used by every Ray Train worker of ``python -m platform.run asl`` (through ``platform/data/stream.py`` and
``platform/train/loop.py``); tested without Ray in ``tests/test_exact.py``.

1. **Order is a function of (seed, epoch) alone.** Epoch e visits the shards of the preprocessed
   store in a permutation seeded by (seed, e), a window of ``shards_per_window`` consecutive
   shards at a time, and shuffles the rows of each window with the same seed. Nothing depends on
   the number of workers, on block sizes or on timing, so every worker computes the same global
   sequence without talking to the others.
2. **Length buckets keep that property.** With variable-length rows, a window's shuffled rows are
   stably sorted by length and cut into batch-sized chunks whose order is shuffled again: similar
   lengths share a batch (less padding), and the order is still a function of (seed, epoch).
3. **A global step is ``workers x batch_size`` consecutive samples**; rank r takes the r-th part.
   A last step too small to give every rank a sample is merged into the step before it, so every
   rank takes the same number of steps (DDP's all-reduce needs that).
4. **A position is the number of samples of the epoch already trained**, counted in the global
   sequence. Checkpoints are taken at optimizer-step boundaries, where no gradient is pending, and
   hold the position; a restart on the same worker count continues bitwise, and one on another
   count trains the remaining samples of the epoch, each exactly once.
5. **Every random stream is re-seeded from (seed, optimizer steps taken, rank) before each
   optimizer step**, so no generator state needs saving and a restart from any step draws the same
   dropout masks as the run that never stopped.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The data-order seed of an epoch; large primes keep the streams apart."""
    return (seed * 1_000_003 + epoch * 10_007) % 2**31


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of the random streams (dropout, augmentation) before optimizer step ``step``."""
    return (seed * 1_000_003 + step * 7_919 + rank * 101 + 17) % 2**31


def shard_order(num_shards: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([epoch_seed(seed, epoch), 0]).permutation(num_shards)


def windows(num_shards: int, shards_per_window: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The epoch's shards in visiting order, grouped into shuffle windows."""
    order = shard_order(num_shards, seed, epoch)
    size = max(1, shards_per_window)
    return [order[start : start + size] for start in range(0, num_shards, size)]


def window_order(lengths: np.ndarray, seed: int, epoch: int, window: int, batch_size: int, offset: int, bucket: bool) -> np.ndarray:
    """The visiting order of one window's rows (indices into them).

    ``offset`` is the number of samples before this window in the epoch: with buckets, chunk edges
    fall on multiples of ``batch_size`` in the global sequence, so a full batch is one bucket. The
    first and last (partial) chunks stay in place; the full chunks between them are shuffled.
    """
    rng = np.random.default_rng([epoch_seed(seed, epoch), 1, window])
    order = rng.permutation(len(lengths))
    if not bucket or len(lengths) <= batch_size:
        return order
    order = order[np.argsort(lengths[order], kind="stable")]
    head = (-offset) % batch_size
    body = order[head:]
    full = len(body) // batch_size * batch_size
    chunks = body[:full].reshape(-1, batch_size)[rng.permutation(full // batch_size)]
    return np.concatenate([order[:head], chunks.reshape(-1), body[full:]])


def global_steps(samples: Iterable[np.ndarray], world: int, batch_size: int) -> Iterator[np.ndarray]:
    """The epoch's global steps from its sample sequence (given in pieces of any size): each step
    ``world * batch_size`` samples, the last merged into the one before when it could not give
    every rank a sample. Needs to look at most one step ahead."""
    size = world * batch_size
    pending = np.zeros(0, dtype=np.int64)
    for piece in samples:
        pending = np.concatenate([pending, np.asarray(piece, dtype=np.int64)])
        # A full step can go once what follows it is enough for one sample a rank.
        while len(pending) >= size + world:
            yield pending[:size]
            pending = pending[size:]
    if len(pending) > size:  # a step and a tail too small to split: one merged step
        yield pending
    elif len(pending):
        yield pending


def step_count(samples: int, world: int, batch_size: int) -> int:
    """How many global steps :func:`global_steps` makes of ``samples`` samples."""
    size = world * batch_size
    full, tail = divmod(samples, size)
    if tail >= world or (tail and not full):
        return full + 1
    return full  # no tail, or one merged into the last full step


def rank_part(step: np.ndarray, world: int, rank: int) -> np.ndarray:
    """Rank ``rank``'s contiguous part of a global step: ``batch_size`` each for a full step, the
    first ranks one more for a merged last step."""
    return np.array_split(step, world)[rank]
