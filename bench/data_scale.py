"""Data at scale: ASL sequences of real lengths through the preprocessed store, against plain baselines.

    .venv/bin/python -m bench.data_scale [--small | --full]

``--small`` (default): sets of 500, 1000 and 2000 sequences, training on the 2000 (a few minutes).
``--full``: 5000, 10000 and 20000, training on the 5000 (up to about 40 minutes; 8 GB of landmark
files). Run from the repository root. The landmark files (bench/asl_lengths.py: Kaggle layout, real
lengths) are written once into the platform cache (``RAYPLATFORM_CACHE``); every store afresh in a
temporary folder. ``max_len`` is 384 (the full tier's), so no sequence is cut (the longest has 240).

For each size:
- preprocessing rows/s per core: ``platform.data.ingest.prepare`` (Ray Data tasks writing parquet shards,
  a local Ray of ``nproc`` CPUs) against a ``multiprocessing.Pool(nproc)`` mapping
  ``read_features(path, 384)`` over the same files, keeping only frame counts: the mean of a run
  before and one after the platform's (the machine's speed drifts), the page cache warmed first. The
  pool runs at the niceness Ray gives its workers (``RAY_worker_niceness``, 15 by default), so on a
  shared machine the ratio is the code's, not the scheduler's. ``prep_vs_plain`` target >= 0.9.
  The invocation's first ``prepare`` (100 sequences in shards of 16 rows, so that every worker gets
  a task) starts Ray Data's workers, which import torch and the trainable: shown on its own, in no
  size's figures.
- store bytes (the manifests' sum of shards) against the rows' unpadded float16 bytes (frames x 744
  x 2 summed over rows), target <= 1.2; and the padded float32 bytes the old path held.
- the driver's peak RSS (psutil, every 20 ms) during ``prepare`` and one read of the whole store
  (``split_batches``); ``driver_rss_ratio`` = peak at the largest size / at the smallest, target
  <= 1.2. The object store's peak: the raylet's ``store_stats.object_store_bytes_used`` (Ray's
  private ``internal_api.get_memory_info_reply``, by this instance's address as other Ray instances
  may run here, every 0.2 s); a 200 MiB ``ray.put`` moves it and ``cluster_resources()`` minus
  ``available_resources()`` of ``object_store_memory`` alike.

Training (after ``ray.shutdown()``, in this process, no Ray Train): the fast tier's model with
max_len 384, torch threads = nproc, one model per arm from the same seed, 3 untimed warm-up batches,
then rounds of one epoch (2 at ``--small``, 3 at ``--full``): stream and memory back to back, which
goes first alternating, then padded; ratios within each round, their median reported.
- ``stream``: ``prefetched(rank_batches(..., bucket=True))`` out of the store, as a worker reads it;
- ``memory``: the same epoch's batches (same order and padding: their store ids are compared)
  collected into a list first, only the training over the list timed; ``stream_vs_memory`` =
  stream samples/s / memory samples/s, target >= 0.97;
- ``padded``: the old path, ``extract_features(path, 384)`` (every sequence padded to 384 frames),
  shuffled, batches of the same size. Such a batch costs the same whatever its rows, so a fixed
  number (4 at ``--small``, 6 at ``--full``) is timed. ``real_length_speedup`` = stream
  sequences/s / padded sequences/s, target >= 3.
Reading ``stream_vs_memory``: ``collate`` runs torch ops in the prefetch thread, which so gets an
OpenMP team of its own, and libgomp (torch's) shortens every team's spin-waits once it counts more
threads than cores: on a quiet machine the training threads then sleep and wake at each parallel
region (stream below memory), on an oversubscribed one they stop burning time slices spinning
(stream above memory, by several times). Read it with the load average shown.
The last line is one JSON object of the headline figures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from bench import asl_lengths
from bench.common import QUIET_ENV, REPO_ROOT, median, parse_setting, print_summary
from platform import config as config_lib
from platform import registry
from platform.data import ingest, stream
from platform.train import loop
from platform.train.exact import seed_everything
from search_spaces.asl import TIERS
from trainables import asl
from trainables.asl.landmarks import NUM_FEATURES, extract_features, read_features, read_index

MAX_LEN = 384
SETTINGS = {
    "small": {"sizes": (500, 1000, 2000), "train_size": 2000, "epochs": 2, "padded_batches": 4},
    "full": {"sizes": (5000, 10000, 20000), "train_size": 5000, "epochs": 3, "padded_batches": 6},
}
"""Sets measured; the one trained on; training rounds (one epoch each); padded batches a round."""
WARM_UP_BATCHES, WARM_UP_SEQUENCES, WARM_UP_SHARD_ROWS = 3, 100, 16
RSS_EVERY_S, OBJECT_STORE_EVERY = 0.02, 10  # object store: every 10th RSS sample (a raylet call)
MIB = 2**20


def bench_config(folder: Path) -> asl.Config:
    cfg = config_lib.resolve(asl.Config, TIERS["fast"])
    return config_lib.apply(cfg, {"max_len": MAX_LEN, "data_dir": str(folder)}, "bench.data_scale")


def _frames(path: str) -> int:
    return len(read_features(path, MAX_LEN))


def plain_seconds(pool, paths: list[str]) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    lengths = pool.map(_frames, paths, chunksize=16)
    return time.perf_counter() - started, np.array(lengths)


def object_store_probe():
    """A function returning the bytes this Ray instance's object store holds now."""
    import ray
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    context = ray.get_runtime_context()
    node = next(n for n in ray.nodes() if n["NodeID"] == context.get_node_id())
    state = get_state_from_address(context.gcs_address)  # by address: other Ray instances may run here
    return lambda: get_memory_info_reply(state, node["NodeManagerAddress"], node["NodeManagerPort"]).store_stats.object_store_bytes_used


@contextlib.contextmanager
def peaks(object_store_used):
    """Samples the driver's RSS and the object store's use in a thread; yields the running peaks."""
    found = {"rss": 0, "object_store": 0}
    stop, me = threading.Event(), psutil.Process()

    def sample() -> None:
        count = 0
        while not stop.is_set():
            found["rss"] = max(found["rss"], me.memory_info().rss)
            if count % OBJECT_STORE_EVERY == 0:
                found["object_store"] = max(found["object_store"], object_store_used())
            count += 1
            stop.wait(RSS_EVERY_S)

    thread = threading.Thread(target=sample, daemon=True, name="bench-peaks")
    thread.start()
    try:
        yield found
    finally:
        stop.set()
        thread.join()


@dataclasses.dataclass
class SizeResult:
    size: int
    rows: int
    prep_s: float
    plain_s: float
    store_bytes: int
    f16_bytes: int
    rss_start: int
    rss_peak: int
    object_store_peak: int


def measure_size(size: int, folder: Path, pool, ncores: int, scratch: Path, object_store_used):
    cfg = bench_config(folder)
    index, _meta = read_index(str(folder), cfg.val_fraction, cfg.seed)
    paths = [row["path"] for split in index.values() for row in split]
    for path in paths:  # the page cache warm, so that neither side reads cold files
        Path(path).read_bytes()
    before_s, lengths = plain_seconds(pool, paths)
    rss_start = psutil.Process().memory_info().rss
    with peaks(object_store_used) as found:
        started = time.perf_counter()
        splits, meta = ingest.prepare(registry.load("asl"), cfg, root=str(scratch / f"store-{size}"), say=print)
        prep_s = time.perf_counter() - started
        read = sum(len(batch["label"]) for split in splits.values() for batch in stream.split_batches(split, cfg.batch_size))
    after_s, _lengths = plain_seconds(pool, paths)
    if read != len(paths) or sum(s.rows for s in splits.values()) != len(paths):
        raise SystemExit(f"store of {size}: {read} rows read back, {len(paths)} files")
    store_bytes, f16_bytes = sum(meta["store"][name]["bytes"] for name in splits), int(lengths.sum()) * NUM_FEATURES * 2
    return SizeResult(
        size, len(paths), prep_s, (before_s + after_s) / 2, store_bytes, f16_bytes, rss_start, found["rss"], found["object_store"]
    ), splits


def fresh_state(cfg: asl.Config, meta: dict) -> loop.TrainState:
    seed_everything(cfg.seed)  # every arm starts from the same weights
    return loop.new_state(asl.build_model(cfg, meta), cfg, torch.device("cpu"))


def timed_epoch(state: loop.TrainState, batches, cfg, epoch: int) -> float:
    asl.on_epoch_start(state.model, epoch, cfg)
    started = time.perf_counter()
    loop.train_one_epoch(asl, state, batches, cfg, torch.device("cpu"))
    return time.perf_counter() - started


def padded_batches(folder: Path, cfg: asl.Config, count: int) -> list[dict]:
    """The old path: shuffled training files, each padded to ``max_len`` frames."""
    rows = read_index(str(folder), cfg.val_fraction, cfg.seed)[0]["train"]
    chosen = np.random.default_rng(cfg.seed).permutation(len(rows))[: count * cfg.batch_size]
    batches = []
    for part in np.array_split(chosen, count):
        features, masks = zip(*(extract_features(rows[i]["path"], cfg.max_len) for i in part))
        batches.append(
            {
                "x": torch.from_numpy(np.stack(features)),
                "x_mask": torch.from_numpy(np.stack(masks)),
                "label": torch.tensor([rows[i]["label"] for i in part]),
            }
        )
    return batches


def train_arms(split, folder: Path, setting: dict, ncores: int) -> list[dict]:
    """One round an epoch: each arm's seconds and samples; stream and memory back to back, which
    goes first alternating, padded after them."""
    torch.set_num_threads(ncores)
    cfg = bench_config(folder)
    meta = {"classes": [f"sign{i:03d}" for i in range(asl_lengths.SIGNS)]}
    order = {
        "rank": 0,
        "world": 1,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "bucket": True,
        "shards_per_window": max(1, cfg.shuffle_buffer // cfg.shard_rows),
    }  # as platform/train/worker.py
    padded = padded_batches(folder, cfg, setting["padded_batches"])
    states = {arm: fresh_state(cfg, meta) for arm in ("stream", "memory", "padded")}
    warm_up = padded[:1] + [b for b, _i, _p in stream.rank_batches(split, epoch=0, **order)][:WARM_UP_BATCHES]
    loop.train_one_epoch(asl, fresh_state(cfg, meta), warm_up, cfg, torch.device("cpu"))  # allocator, threads
    rounds = []
    for epoch in range(setting["epochs"]):
        listed = list(stream.rank_batches(split, epoch=epoch, **order))
        streamed_ids: list[np.ndarray] = []

        def streamed(epoch=epoch, ids=streamed_ids):
            for batch, batch_ids, _position in stream.prefetched(stream.rank_batches(split, epoch=epoch, **order)):
                ids.append(batch_ids)
                yield batch

        feeds = {"stream": streamed, "memory": lambda listed=listed: [b for b, _i, _p in listed], "padded": lambda: padded}
        pair = ["stream", "memory"][:: 1 if epoch % 2 == 0 else -1]
        took = {arm: timed_epoch(states[arm], feeds[arm](), cfg, epoch) for arm in [*pair, "padded"]}
        if [ids.tolist() for ids in streamed_ids] != [ids.tolist() for _b, ids, _p in listed]:
            print(f"[data_scale] WARNING: epoch {epoch}: the streamed batches differ from the listed ones")
        rounds.append(
            {
                "seconds": took,
                "samples": {"stream": split.rows, "memory": split.rows, "padded": sum(len(b["label"]) for b in padded)},
                "real_share": sum(int(b["x_mask"].sum()) for b, _i, _p in listed) / sum(b["x_mask"].numel() for b, _i, _p in listed),
                "padded_share": float(np.mean([b["x_mask"].float().mean() for b in padded])),
            }
        )
        print(f"[data_scale] training round {epoch + 1}: " + ", ".join(f"{arm} {s:.1f}s" for arm, s in took.items()))
    return rounds


def rates(rounds: list[dict]) -> dict:
    """samples/s of each arm over all rounds, and the median over rounds of the two ratios."""
    total = {arm: sum(r["samples"][arm] for r in rounds) / sum(r["seconds"][arm] for r in rounds) for arm in ("stream", "memory", "padded")}
    per_round = [{arm: r["samples"][arm] / r["seconds"][arm] for arm in total} for r in rounds]
    return {
        **total,
        "stream_vs_memory": [r["stream"] / r["memory"] for r in per_round],
        "real_length_speedup": [r["stream"] / r["padded"] for r in per_round],
    }


@contextlib.contextmanager
def local_ray(ncores: int):
    """A Ray of its own (other instances may run on this machine), workers finding this repo's
    ``platform`` first, as ``platform/cluster.py`` arranges; no dashboard (nothing here reads it)."""
    import ray

    paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ.update(QUIET_ENV, PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)))
    ray.init(address="local", num_cpus=ncores, include_dashboard=False, log_to_driver=True)
    try:
        yield
    finally:
        ray.shutdown()


def size_rows(results: list[SizeResult], ncores: int) -> list[tuple[str, str]]:
    rows = [
        (
            "size",
            " rows  prep rows/s/core  plain rows/s/core  prep/plain  store MiB  f16 MiB  store/f16  "
            "padded-f32 MiB  driver RSS start/peak MiB  object store peak MiB",
        )
    ]
    for r in results:
        prep, plain = r.rows / r.prep_s / ncores, r.rows / r.plain_s / ncores
        rows.append(
            (
                f"{r.size}",
                f"{r.rows:5d}  {prep:16.1f}  {plain:17.1f}  {prep / plain:10.3f}  "
                f"{r.store_bytes / MIB:9.1f}  {r.f16_bytes / MIB:7.1f}  {r.store_bytes / r.f16_bytes:9.3f}  "
                f"{r.rows * MAX_LEN * NUM_FEATURES * 4 / MIB:14.0f}  "
                f"{r.rss_start / MIB:12.0f} / {r.rss_peak / MIB:6.0f}  "
                f"{r.object_store_peak / MIB:21.1f}",
            )
        )
    return rows


def _median_of(values: list[float], digits: int) -> str:
    return f"{median(values):.{digits}f} (median of rounds " + ", ".join(f"{v:.{digits}f}" for v in values) + ")"


def train_rows(rounds: list[dict], rows: int) -> list[tuple[str, str]]:
    rate = rates(rounds)
    arms = ("stream", "memory", "padded")
    lines = [
        (
            f"train {arm}",
            f"{rate[arm]:8.1f} samples/s  ({sum(r['samples'][arm] for r in rounds)} samples "
            f"in {sum(r['seconds'][arm] for r in rounds):.1f}s)",
        )
        for arm in arms
    ]
    return lines + [
        ("stream_vs_memory", f"{_median_of(rate['stream_vs_memory'], 3)}; target >= 0.97; {rows} training rows"),
        ("real_length_speedup", f"{_median_of(rate['real_length_speedup'], 2)}; target >= 3"),
        (
            "real frames",
            f"{rounds[0]['real_share']:.1%} of the stream batches' frames (length buckets), "
            f"{rounds[0]['padded_share']:.1%} of the padded batches'",
        ),
    ]


def headline(results: list[SizeResult], rounds: list[dict], ncores: int, lengths: dict, warm_s: float, wall_s: float) -> dict:
    rate, ratios, first, last = rates(rounds), [r.plain_s / r.prep_s for r in results], results[0], results[-1]
    return {
        "sizes": [r.size for r in results],
        "cores": ncores,
        "lengths": lengths,
        "prep_vs_plain": round(ratios[-1], 3),
        "prep_vs_plain_by_size": [round(x, 3) for x in ratios],
        "prep_rows_per_s_core": [round(r.rows / r.prep_s / ncores, 1) for r in results],
        "plain_rows_per_s_core": [round(r.rows / r.plain_s / ncores, 1) for r in results],
        "first_prepare_s": round(warm_s, 1),
        "store_ratio": round(last.store_bytes / last.f16_bytes, 3),
        "store_mib": [round(r.store_bytes / MIB, 1) for r in results],
        "driver_rss_ratio": round(last.rss_peak / first.rss_peak, 3),
        "driver_peak_rss_mib": [round(r.rss_peak / MIB) for r in results],
        "object_store_peak_mib": [round(r.object_store_peak / MIB, 2) for r in results],
        "object_store_source": "raylet store_stats.object_store_bytes_used (ray._private.internal_api)",
        "train_samples_per_s": {arm: round(rate[arm], 1) for arm in ("stream", "memory", "padded")},
        "stream_vs_memory": round(median(rate["stream_vs_memory"]), 3),
        "real_length_speedup": round(median(rate["real_length_speedup"]), 2),
        "wall_s": round(wall_s),
    }


def first_prepare_seconds(ncores: int) -> float:
    """A prepare of a small set first: Ray Data's first tasks start workers that import torch and
    the trainable, a cost of the invocation, not of its rows."""
    cfg = config_lib.apply(
        bench_config(asl_lengths.dataset(WARM_UP_SEQUENCES, ncores)), {"shard_rows": WARM_UP_SHARD_ROWS}, "bench.data_scale"
    )  # a task for every worker
    with tempfile.TemporaryDirectory(prefix="bench-data-scale-warm-") as scratch:
        started = time.perf_counter()
        ingest.prepare(registry.load("asl"), cfg, root=scratch, say=lambda line: None)
        return time.perf_counter() - started


def main() -> int:
    args = parse_setting(__doc__)
    setting = SETTINGS["full" if args.full else "small"]
    started, ncores = time.perf_counter(), os.cpu_count() or 1
    sampled = asl_lengths.length_stats(asl_lengths.sample_lengths(max(setting["sizes"])))
    lengths = {key: round(value, 1) for key, value in sampled.items()}
    print(f"[data_scale] sampled lengths: {lengths} (real: mean 32, median 17, p95 115, max 240)")
    # Every file is written, and the pool forked, before Ray starts: no fork of a process with Ray's threads.
    folders = {size: asl_lengths.dataset(size, ncores) for size in setting["sizes"]}
    niceness = int(os.environ.get("RAY_worker_niceness", "15"))
    results, train_split = [], None
    with (
        tempfile.TemporaryDirectory(prefix="bench-data-scale-") as scratch,
        multiprocessing.get_context("fork").Pool(ncores, os.nice, (niceness,)) as pool,
    ):
        with local_ray(ncores):
            probe = object_store_probe()
            warm_s = first_prepare_seconds(ncores)
            print(f"[data_scale] first prepare ({WARM_UP_SEQUENCES} sequences, workers starting): {warm_s:.1f}s")
            for size in setting["sizes"]:
                result, splits = measure_size(size, folders[size], pool, ncores, Path(scratch), probe)
                results.append(result)
                print(f"[data_scale] {size}: prepare {result.prep_s:.1f}s, plain loop {result.plain_s:.1f}s")
                if size == setting["train_size"]:
                    train_split = splits["train"]
        rounds = train_arms(train_split, folders[setting["train_size"]], setting, ncores)
    print_summary(
        f"data at scale: asl, real lengths, max_len {MAX_LEN}, {ncores} cores (training: fast model on the {setting['train_size']} set)",
        size_rows(results, ncores) + train_rows(rounds, train_split.rows),
        [
            f"plain loop = multiprocessing.Pool({ncores}) of read_features at niceness {niceness} "
            "(Ray's workers'), mean of a run before and after prepare",
            f"first prepare of the invocation ({WARM_UP_SEQUENCES} sequences, Ray Data's workers "
            f"starting) took {warm_s:.1f}s; not in the sizes' figures",
            "object store = the raylet's store_stats.object_store_bytes_used, sampled every 0.2 s",
        ],
    )
    print(json.dumps(headline(results, rounds, ncores, lengths, warm_s, time.perf_counter() - started)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
