"""The rules of an exact run (``platform/train/exact.py``), without Ray: order, rank parts, positions.

.venv/bin/python -m pytest tests/test_exact.py
"""

from __future__ import annotations

import numpy as np
import pytest

from platform.train import exact


def _sequence(rows: int, shard_rows: int, spw: int, seed: int, epoch: int, batch: int, lengths=None, bucket=False):
    """The epoch's global sample sequence over a store of ``rows`` rows, as pieces (one a window)."""
    lengths = np.arange(rows) % 37 if lengths is None else lengths
    shards = [np.arange(start, min(start + shard_rows, rows)) for start in range(0, rows, shard_rows)]
    offset, pieces = 0, []
    for index, window in enumerate(exact.windows(len(shards), spw, seed, epoch)):
        ids = np.concatenate([shards[i] for i in window])
        order = exact.window_order(lengths[ids], seed, epoch, index, batch, offset, bucket)
        pieces.append(ids[order])
        offset += len(order)
    return pieces


def _rank_batches(pieces, world: int, batch: int):
    """Per rank, the list of its batches (arrays of sample ids)."""
    out = [[] for _ in range(world)]
    for step in exact.global_steps(pieces, world, batch):
        for rank in range(world):
            out[rank].append(exact.rank_part(step, world, rank))
    return out


@pytest.mark.parametrize("world", [1, 2, 3])
def test_the_global_order_does_not_depend_on_the_worker_count(world):
    pieces = _sequence(rows=203, shard_rows=16, spw=3, seed=7, epoch=2, batch=8)
    expected = np.concatenate(pieces)
    batches = _rank_batches(pieces, world, 8)
    steps = len(batches[0])
    assert all(len(rank) == steps for rank in batches)  # DDP: every rank the same number of steps
    seen = np.concatenate([batches[rank][s] for s in range(steps) for rank in range(world)])
    assert seen.tolist() == expected.tolist()  # rank r takes the r-th part of each global step
    assert sorted(seen.tolist()) == list(range(203))


def test_order_is_a_function_of_seed_and_epoch():
    first = np.concatenate(_sequence(100, 10, 2, seed=1, epoch=0, batch=4))
    assert np.array_equal(first, np.concatenate(_sequence(100, 10, 2, seed=1, epoch=0, batch=4)))
    assert not np.array_equal(first, np.concatenate(_sequence(100, 10, 2, seed=1, epoch=1, batch=4)))
    assert not np.array_equal(first, np.concatenate(_sequence(100, 10, 2, seed=2, epoch=0, batch=4)))


def test_a_tail_too_small_for_every_rank_joins_the_step_before():
    steps = list(exact.global_steps([np.arange(17)], world=2, batch_size=4))
    assert [len(s) for s in steps] == [8, 9]  # 8 + 1 left: the 1 could not feed both ranks
    assert [len(exact.rank_part(steps[-1], 2, r)) for r in (0, 1)] == [5, 4]
    assert [len(s) for s in exact.global_steps([np.arange(18)], world=2, batch_size=4)] == [8, 8, 2]


def test_buckets_cut_padding_and_keep_every_sample_once():
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.lognormal(3.0, 1.0, 1000).astype(int) + 1, 384)
    plain = _sequence(1000, 100, 4, 3, 0, 32, lengths, bucket=False)
    bucketed = _sequence(1000, 100, 4, 3, 0, 32, lengths, bucket=True)

    def padded(pieces):
        return sum(len(b) * lengths[b].max() for rank in _rank_batches(pieces, 1, 32) for b in rank)

    assert sorted(np.concatenate(bucketed).tolist()) == list(range(1000))
    assert padded(bucketed) < 0.5 * padded(plain)
    again = _sequence(1000, 100, 4, 3, 0, 32, lengths, bucket=True)
    assert np.array_equal(np.concatenate(bucketed), np.concatenate(again))


@pytest.mark.parametrize(("before", "after"), [(1, 2), (2, 1), (2, 3)])
def test_a_resume_on_another_worker_count_trains_the_rest_of_the_epoch_once(before, after):
    pieces = _sequence(rows=157, shard_rows=16, spw=2, seed=5, epoch=1, batch=4)
    sequence = np.concatenate(pieces)
    first = _rank_batches(pieces, before, 4)
    position = sum(len(b) for rank in first for b in rank[:5])  # a checkpoint after 5 steps
    trained = [b for rank in first for b in rank[:5]]
    rest = _rank_batches([sequence[position:]], after, 4)
    trained += [b for rank in rest for b in rank]
    assert sorted(np.concatenate(trained).tolist()) == list(range(157))


def test_step_seeds_differ_by_step_and_rank():
    seeds = {exact.step_seed(0, step, rank) for step in range(100) for rank in range(4)}
    assert len(seeds) == 400


@pytest.mark.parametrize("samples", [0, 1, 3, 7, 8, 9, 16, 17, 18, 23, 24, 25, 100])
@pytest.mark.parametrize(("world", "batch_size"), [(1, 4), (2, 4), (3, 2)])
def test_step_count_is_the_number_of_global_steps(samples, world, batch_size):
    pieces = np.array_split(np.arange(samples), 3)
    assert exact.step_count(samples, world, batch_size) == len(list(exact.global_steps(pieces, world, batch_size)))
