"""Label images and their texts with a vision model behind an OpenAI-compatible API, on Ray Data.

    OPENROUTER_API_KEY=... python -m platform.label /path/to/social [--task gender_bias] [--out DIR] [--model M]
        [--base-url URL] [--rpm N | --rps R] [--tpm T] [--concurrency C] [--budget-usd X] [--max-retries N]
        [--timeout S] [--dry-run] [--address ADDR] [--price-in USD_PER_MTOK --price-out USD_PER_MTOK]
        [--allow-outside-images] [--batch [--poll S] [--batch-discount F]]

What is asked is the task's (``--task``: a trainable with a ``labeling.py``, or a module of yours;
platform/label/task.py): its prompt, its reply schema, its columns. For ``gender_bias`` (the only
one today, so the default) the source is a posts.csv (post_id, image_path, caption, ...) or the
folder holding it; each uncached row's image (base64 data URL) and caption go to ``--model``, and
the reply must be a JSON object with a numeric ``score`` in 0..10 and a short ``reason``. Writes, in
``--out`` (default ``<source folder>/labeled``): ``labels.csv`` (what the task's trainable reads:
``python -m platform.run gender_bias --data DIR``), ``quarantine.csv``, ``ledger.json`` (this
run's requests, tokens and cost, and ``totals``
over every run into ``--out``, killed ones included, from the attempt logs in ``<out>/runs/``), and
keeps every answer in ``<out>/cache/`` the moment it arrives, so a re-run or a run resumed after a
kill never pays twice. Answers are cached per API (``--base-url``): a run against a test server
never serves a real one. ``--rpm``/``--rps``, ``--tpm`` and ``--concurrency`` hold for the whole
job, however many actors run (one Ray actor grants every request; see platform/label/gate.py).
``--tpm`` counts what the provider counts: each request's prompt (text at 4 characters a token,
images by OpenAI's rule for the detail level used, or ``--image-tokens``) plus its ``max_tokens``,
taken before the send and corrected from the reply's usage. A Labeler actor that dies is
restarted by Ray Data and re-runs its batch: rows already answered are not sent again, and the
concurrency slots the dead process held come back. A 429's Retry-After pauses the job at most
``--timeout`` seconds (at most 60), said in one line when the server asked for longer. An
``image_path`` outside the source folder is refused (exit 2) unless ``--allow-outside-images``.
``--batch`` sends the same requests through the Batch API at its lower price, without Ray, and
resumes the batches a killed driver left (platform/label/batch.py).
The driver reads each image once, to check it and hash it into its cache key, and keeps only the
row (path, text, digest, key): the Labeler actors read the images as they send them, so neither
the driver nor Ray's object store grows with the images (``bench/label_memory.py``); an image
rewritten after the scan is quarantined as ``changed_image``, never sent under the old key. One run
at a time writes into ``--out`` (and ``--cache``): a second is refused with one error line
(platform/label/lock.py). A ``--base-url`` with a ``user:password@`` part or a query is refused:
the key goes in the environment, never in the URL.

Exit codes: 0 done (quarantined rows included); 2 a user error (bad input, no API key, key
rejected, server never reachable), as one ``error: ...`` line; 3 stopped at ``--budget-usd``: the rows
left are reported as not labeled, and running again with a higher budget finishes them (cached rows
are free). The key is read from OPENROUTER_API_KEY or OPENAI_API_KEY and never printed or written;
the Ray actors read it from their own environment, never through Ray: on a cluster, set it where
``ray start`` runs on every node, not in a runtime_env (platform/label/secret.py).
"""

from __future__ import annotations

import datetime
import math
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from platform.errors import UserError, exit_on_user_error
from platform.label import answers, inputs, ledger, lock, options, prompt, report, secret
from platform.label.task import Task
from platform.label.task import load as load_task
from platform.tracking import progress

EXIT_BUDGET = 3
PROGRESS_EVERY_S = 2.0
ROWS_PER_BATCH = 4


def estimate(task: Task, todo: list[dict], image_tokens: int | None, tpm: float | None) -> None:
    """Each row's ``tokens``: what its request counts against ``--tpm``. A limit below one request's
    count is a user error: the provider would refuse that request whatever the wait."""
    for row in todo:
        image = (
            image_tokens if image_tokens is not None else prompt.image_tokens(row["width"], row["height"], task.generation["image_detail"])
        )
        row["image_tokens"], row["tokens"] = image, task.request_tokens(row["text"], image)
    largest = max((row["tokens"] for row in todo), default=0)
    if tpm is not None and tpm < largest:
        raise UserError(
            f"--tpm {tpm:g} is less than one request's tokens (~{largest:,} estimated: prompt and "
            f"max_tokens {task.generation['max_tokens']}): no request would fit in a minute"
        )


def plan(posts: inputs.Posts, cached: dict[str, dict], retry_quarantined: bool) -> tuple[list, dict, list]:
    """Rows quarantined before any request, cached results by key, and the unique keys to ask."""
    early, hits, todo, seen = [], {}, [], set()
    for row in posts.table.to_dict("records"):
        if row["problem"]:
            early.append(row)
            continue
        record = cached.get(row["key"])
        if record and not (retry_quarantined and record.get("status") != "labeled"):
            hits[row["key"]] = record
        elif row["key"] not in seen:
            seen.add(row["key"])
            todo.append(row)
    return early, hits, todo


def dry_run(task: Task, posts, *, early, hits, todo, rps: float, price: tuple[float, float] | None, args) -> int:
    prompt_tokens = sum(task.prompt_tokens(r["text"], r["image_tokens"]) for r in todo)
    completion_tokens = prompt.EXPECTED_COMPLETION_TOKENS * len(todo)
    seconds = max(len(todo) / rps, sum(r["tokens"] for r in todo) / args.tpm * 60 if args.tpm else 0)
    tpm = f" and {args.tpm:g} tokens/min" if args.tpm else ""
    image_tokens = sorted({r["image_tokens"] for r in todo}) or [0]
    each = f"~{image_tokens[0]}" if len(image_tokens) == 1 else f"~{image_tokens[0]}-{image_tokens[-1]}"
    cost = None if price is None else (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
    reasons = ", ".join(f"{k} {v}" for k, v in report.by_reason([r["problem"] for r in early]).items()) or "none"
    priced = f"at ${price[0]:g}/${price[1]:g} per Mtok" if price else "(no prices known: pass --price-in/--price-out)"
    print(f"[label] dry run: {len(posts.table)} rows, {len(hits)} cached, {len(early)} quarantined before any request ({reasons})")
    pace = f"at {rps * 60:g} requests/min{tpm}: at least {seconds:.0f}s"
    if args.batch:
        pace, priced = "through the Batch API: within its 24h window", f"{priced} (the batch price)"
    print(f"  would send {len(todo)} requests to {args.model} ({pace}), retries not counted")
    print(f"  tokens (estimate): ~{prompt_tokens:,} prompt ({each} an image) + ~{completion_tokens:,} completion")
    print(f"  cost (estimate): ~{report.money(cost)} {priced}")
    return 0


def label_remote(task: Task, todo: list[dict], *, args, rps: float, price, key_digest: str, run: dict, total: int, base_done: dict):
    """Runs the Ray Data job; returns (results by key, gate stats). ``run``: id, cache shard, attempt log."""
    import ray
    import ray.data
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from platform import cluster
    from platform.label.gate import Gate, Limits
    from platform.label.labeler import Labeler, Settings

    cluster.start(args.address, verbose=args.verbose)
    # The task travels by value: a user's task module need not be installed on the nodes, and a
    # trainable's is not imported through its package (which would import torch into every actor).
    ray.cloudpickle.register_pickle_by_value(sys.modules[task.module])
    gate = Gate.options(
        name=f"label-gate-{run['id']}",
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False),
    ).remote(Limits(rps, args.concurrency, args.budget_usd, args.tpm), str(run["shard"]), str(run["attempts"]))
    settings = Settings(
        base_url=args.base_url,
        model=args.model,
        timeout_s=args.timeout,
        max_retries=args.max_retries,
        backoff_s=args.backoff,
        price_in=price[0] if price else 0.0,
        price_out=price[1] if price else 0.0,
        openrouter="openrouter.ai" in args.base_url,
        # Never the key: all that goes to Ray is pickled into the object store. The actors read
        # it from their own environment (platform/label/secret.py).
        key_digest=key_digest,
        task=task,
    )
    import pandas as pd

    # Paths and digests, never the images: each Labeler reads its rows' images as it sends them, so
    # neither the driver nor the object store holds the source (platform/label/labeler.py).
    frame = pd.DataFrame([{k: r[k] for k in ("key", "id", "text", "image_path", "digest", "mime", "tokens")} for r in todo])
    # Several small blocks, so every actor gets work from the start.
    blocks = [frame.iloc[i : i + ROWS_PER_BATCH] for i in range(0, len(frame), ROWS_PER_BATCH)]
    actors = min(args.actors, len(blocks))
    dataset = ray.data.from_pandas(blocks).map_batches(
        Labeler,
        batch_size=ROWS_PER_BATCH,
        batch_format="pandas",
        fn_constructor_args=(settings, gate),
        compute=ray.data.ActorPoolStrategy(size=actors, max_concurrent_calls_per_actor=max(1, math.ceil(args.concurrency / actors))),
        # On the driver's node, where the scan read the images (another node may not see that
        # folder); no CPU, as the API's latency, not the CPU, sets the pace, and a cluster's head
        # (where a submitted job's driver runs) often has none to give.
        num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False),
    )
    results: dict[str, dict] = {}
    started = last_print = time.monotonic()
    told = False
    for batch in dataset.iter_batches(batch_size=None, batch_format="pandas"):
        for record in batch.to_dict("records"):
            results[record["key"]] = record
        if time.monotonic() - last_print >= PROGRESS_EVERY_S:
            last_print = time.monotonic()
            stats = ray.get(gate.stats.remote())
            told = told or _tell_capped(stats, args.timeout)
            print(_progress(results, total, base_done, stats, last_print - started), flush=True)
    stats = ray.get(gate.stats.remote())
    if not told:
        _tell_capped(stats, args.timeout)
    print(_progress(results, total, base_done, stats, time.monotonic() - started), flush=True)
    ray.get(gate.close.remote())
    ray.kill(gate)
    return results, stats


def _tell_capped(stats: dict, timeout_s: float) -> bool:
    """One line once the server asked for a longer pause than we give: else the wait looks like a hang
    and rows quarantined as rate_limited look like our fault. Returns whether it printed."""
    from platform.label.labeler import retry_after_cap

    if not stats.get("retry_after_capped"):
        return False
    print(
        f"[label] the API asked for pauses of up to {stats['longest_retry_after_s']:g}s (Retry-After, "
        f"{stats['retry_after_capped']} time(s)); paused {retry_after_cap(timeout_s):g}s instead (at most "
        "--timeout, never over 60s): rows still refused are quarantined as rate_limited and a re-run retries them",
        flush=True,
    )
    return True


def _progress(results: dict, total: int, base: dict, stats: dict, elapsed: float) -> str:
    statuses = [r["status"] for r in results.values()]
    labeled, quarantined = statuses.count("labeled"), statuses.count("quarantined")
    done = base["cached"] + base["early"] + labeled + quarantined
    return report.progress(done, total, labeled, base["cached"], base["early"] + quarantined, stats, elapsed)


def assemble(posts: inputs.Posts, hits: dict, results: dict) -> tuple[list, list, list]:
    """labels.csv rows, quarantine.csv rows and the rows left unlabeled, in input order."""
    labels, quarantine, left = [], [], []
    for row in posts.table.to_dict("records"):
        base = {"id": row["id"], "image_path": row["image_path"], "text": row["text"]}
        if row["problem"]:
            quarantine.append({**base, "reason": row["problem"], "attempts": 0})
            continue
        record, cached = (hits[row["key"]], True) if row["key"] in hits else (results.get(row["key"]), False)
        if record is None or record["status"] == "skipped":
            left.append(base)
        elif record["status"] == "quarantined":
            quarantine.append({**base, "reason": record["reason"], "attempts": int(record["attempts"])})
        else:
            labels.append({**base, **{k: record.get(k) for k in report.LABEL_COLUMNS[3:-1]}, "cached": cached})
    return labels, quarantine, left


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = options.build_parser(__doc__).parse_args(argv)
    from platform.label import batch as batch_mode  # the openai client: not imported to print --help

    rps = options.check_args(args)
    task = load_task(args.task)
    started_at, started = datetime.datetime.now().astimezone(), time.monotonic()
    posts = inputs.read(
        args.source, task, args.model, inputs.provider(args.base_url), args.allow_outside_images, bar=progress.wanted(args.progress)
    )
    out = Path(args.out).expanduser().resolve() if args.out else posts.folder / "labeled"
    cache_dir = Path(args.cache).expanduser().resolve() if args.cache else out / "cache"
    job = survey(task, posts, cache_dir, args)
    job.update(rps=rps, out=out, cache_dir=cache_dir, started_at=started_at, started=started)
    job["online_price"] = job["price"] = options.prices(args)
    if args.batch:
        job["price"] = batch_mode.discounted(job["price"], args.batch_discount)
    if args.dry_run:
        return dry_run(task, posts, early=job["early"], hits=job["hits"], todo=job["todo"], rps=rps, price=job["price"], args=args)
    job["key"] = secret.read()
    if job["todo"] and not job["key"]:
        raise UserError(f"no API key: set {secret.KEY_VARIABLES[0]} (or {secret.KEY_VARIABLES[1]}); --dry-run needs none")
    if job["todo"] and args.budget_usd is not None and job["price"] is None:
        raise UserError(f"--budget-usd needs prices for {args.model!r}: pass --price-in and --price-out")
    with lock.hold(out, cache_dir):
        # Surveyed again under the lock: a run that held the folder until now may have answered rows.
        job.update(survey(task, posts, cache_dir, args))
        return run(task, posts, args, job)


def survey(task: Task, posts: inputs.Posts, cache_dir: Path, args) -> dict[str, Any]:
    """The cache and the plan it makes: ``cached``, and ``early``, ``hits``, ``todo`` (see ``plan``)."""
    cached = answers.load(cache_dir)
    early, hits, todo = plan(posts, cached, args.retry_quarantined)
    estimate(task, todo, args.image_tokens, args.tpm)
    return {"cached": cached, "early": early, "hits": hits, "todo": todo}


def run(task: Task, posts: inputs.Posts, args, job: dict[str, Any]) -> int:
    """Sends what the plan left (online or as batches) and writes the outputs, holding the folder."""
    from platform.label import batch as batch_mode

    rps, out, price, todo, hits, early = (job[k] for k in ("rps", "out", "price", "todo", "hits", "early"))
    total = len(posts.table)
    print(
        f"[label] {total} rows from {posts.source}: {len(hits)} cached, {len(early)} quarantined before any "
        f"request, {len(todo)} to ask {args.model} "
        + (
            "through the Batch API"
            if args.batch
            else f"at {rps * 60:g} requests/min{f' and {args.tpm:g} tokens/min' if args.tpm else ''}, {args.concurrency} at a time"
        ),
        flush=True,
    )
    attempts = start_run(args, posts, out, job["cache_dir"], job["started_at"])
    results, stats = {}, {}
    if todo and args.batch:
        results, stats = batch_mode.label(task, todo, args=args, price=price, key=job["key"], run=attempts, out=out, cached=job["cached"])
    elif todo:
        results, stats = label_remote(
            task,
            todo,
            args=args,
            rps=rps,
            price=price,
            key_digest=secret.digest(job["key"]),
            run=attempts,
            total=total,
            base_done={"cached": sum(1 for r in posts.table["key"] if r in hits), "early": len(early)},
        )
        if stats.get("fatal"):
            raise UserError(stats["fatal"])
    labels, quarantine, left = assemble(posts, hits, results)
    figures = ledger.build(
        task,
        args,
        rps=rps,
        price=price,
        posts=posts,
        out=out,
        labels=labels,
        quarantine=quarantine,
        left=left,
        stats=stats,
        started_at=job["started_at"],
        started=job["started"],
    )
    if args.batch:
        figures.update(batch_mode.ledger_fields(stats, args, job["online_price"]))
    report.write(out, task, labels, quarantine, figures)
    print(report.summary(figures, out), flush=True)
    if left:
        print(
            f"[label] budget reached: {report.money(stats.get('cost_usd'))} spent of ${args.budget_usd:g}; "
            f"{len(left)} rows not labeled (run again with a higher --budget-usd: cached rows are free)",
            flush=True,
        )
        return EXIT_BUDGET
    return 0


def start_run(args, posts: inputs.Posts, out: Path, cache_dir: Path, started_at) -> dict[str, Any]:
    """This run's id, cache shard and attempt log (its header written now: a run counts in the
    ledger's totals even if it is killed before its first answer)."""
    run_id = f"{started_at:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
    header = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "source": str(posts.source),
        "model": args.model,
        "provider": inputs.provider(args.base_url),
    }
    return {"id": run_id, "shard": cache_dir / f"{run_id}.jsonl", "attempts": ledger.start_run(out, run_id, header)}


if __name__ == "__main__":
    sys.exit(main())
