"""ledger.json: what the last labeling run into an output folder cost, and what every run into it cost.

Used by ``python -m platform.label posts.csv --out DIR``. The top-level keys describe the last run
(``requests``, ``tokens``, ``cost_usd``, ``rows``...: what ``bench/label_throughput.py`` and the
tests read); ``runs`` and ``totals`` add up every run into DIR. A run's own figures die with its
driver, so they are not taken from earlier ledgers: each run logs to ``DIR/runs/<run id>.jsonl`` (a
header line the driver writes before any request, then one line per finished attempt, appended
and fsynced by the Gate actor as it happens), and the totals are read back from those logs, so a
run killed before it could write ledger.json still counts what it paid.
"""

from __future__ import annotations

import datetime
import time
from collections import Counter
from pathlib import Path
from typing import Any

from platform.label import answers, report

RUNS_DIR = "runs"
# Attempt kinds the ledger lists by name (the rest of the gate's counters are totals, not failures).
FAILURE_KINDS = ("http_", "timeout", "connection_error", "malformed_response", "invalid_reply")


def start_run(out: Path, run_id: str, header: dict[str, Any]) -> Path:
    """Create the run's attempt log with its header line; returns its path (the Gate appends to it)."""
    path = out / RUNS_DIR / f"{run_id}.jsonl"
    log = answers.Shard(path)
    log.write({"run": run_id, **header})
    log.close()
    return path


def totals(out: Path) -> tuple[int, dict[str, Any]]:
    """``(runs, totals)`` over every attempt log in ``out``; a line torn by a kill is skipped."""
    logs = sorted((out / RUNS_DIR).glob("*.jsonl"))
    counts: Counter = Counter()
    cost = 0.0
    for log in logs:
        for attempt in answers.whole_lines(log):
            if "kind" not in attempt:  # the header
                continue
            counts["requests"] += 1
            counts["rows_labeled"] += attempt["kind"] == "ok"
            counts["http_429"] += attempt["kind"] == "http_429"
            counts["retries"] += bool(attempt.get("retry"))
            counts["prompt"] += int(attempt.get("prompt_tokens") or 0)
            counts["completion"] += int(attempt.get("completion_tokens") or 0)
            cost += float(attempt.get("cost_usd") or 0.0)
    return len(logs), {
        "requests": counts["requests"],
        "rows_labeled": counts["rows_labeled"],
        "http_429": counts["http_429"],
        "retries": counts["retries"],
        "tokens": {"prompt": counts["prompt"], "completion": counts["completion"]},
        "cost_usd": round(cost, 8),
    }


def build(task, args, *, rps, price, posts, out, labels, quarantine, left, stats, started_at, started) -> dict[str, Any]:
    """ledger.json: this run's figures at the top level, then ``runs`` and ``totals`` over every run."""
    new = [r for r in labels if not r["cached"]]
    kinds = {k: v for k, v in stats.items() if k.startswith(FAILURE_KINDS)}
    runs, all_runs = totals(out)
    return {
        "status": "budget_reached" if left else "complete",
        "source": str(posts.source),
        "out": str(out),
        "model": args.model,
        "base_url": args.base_url,
        "task": task.module,
        "prompt_version": task.version,
        "generation": task.generation,
        "limits": {
            "requests_per_minute": rps * 60,
            "tokens_per_minute": args.tpm,
            "concurrency": args.concurrency,
            "actors": args.actors,
            "budget_usd": args.budget_usd,
            "max_retries": args.max_retries,
            "timeout_s": args.timeout,
        },
        "prices_usd_per_mtok": {"prompt": price[0], "completion": price[1]} if price else None,
        "rows": {
            "total": len(posts.table),
            "labeled": len(labels),
            "labeled_now": len(new),
            "cached": len(labels) - len(new),
            "quarantined": len(quarantine),
            "quarantined_by_reason": report.by_reason([q["reason"] for q in quarantine]),
            "not_labeled": len(left),
        },
        "requests": stats.get("requests", 0),
        "http_429": stats.get("http_429", 0),
        "retries": stats.get("retries", 0),
        "attempt_failures_by_kind": kinds,
        "retry_after_capped": stats.get("retry_after_capped", 0),
        "tokens": {"prompt": stats.get("prompt_tokens", 0), "completion": stats.get("completion_tokens", 0)},
        "cost_usd": round(stats.get("cost_usd", 0.0), 8),
        "cost_usd_of_cached_rows": round(sum(float(r["cost_usd"] or 0) for r in labels if r["cached"]), 8),
        "achieved_requests_per_minute": stats.get("achieved_rpm"),
        "achieved_tokens_per_minute": stats.get("achieved_tpm"),
        # Labeler actors that died: rows their restarted batches found answered (not paid again),
        # and concurrency slots taken back from dead processes.
        "resends_avoided": stats.get("resends_avoided", 0),
        "slots_taken_back": stats.get("leases_revoked", 0),
        "elapsed_s": round(time.monotonic() - started, 3),
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "runs": runs,
        "totals": all_runs,
    }
