"""What a labeling run leaves behind and prints: labels.csv, quarantine.csv, ledger.json, summary.

Used by ``python -m platform.label posts.csv --out DIR``. ``labels.csv`` is the input of the task's
trainable (``python -m platform.run gender_bias --data DIR``): its id, image, text and label columns
carry the task's names (platform/label/task.py), the rest are the labeler's.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

LABEL_COLUMNS = [
    "id",
    "image_path",
    "text",
    "label",
    "reason",
    "model",
    "prompt_version",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_s",
    "cached",
]
QUARANTINE_COLUMNS = ["id", "image_path", "text", "reason", "attempts"]
LABELS_FILE, QUARANTINE_FILE, LEDGER_FILE = "labels.csv", "quarantine.csv", "ledger.json"


def reason_code(reason: str) -> str:
    """``missing_image`` from ``missing_image: /x.jpg``: the part a ledger groups by."""
    return str(reason).split(":", 1)[0].strip()


def by_reason(reasons: list[str]) -> dict[str, int]:
    return dict(sorted(Counter(reason_code(r) for r in reasons).items()))


def _atomic_write(path: Path, text: str) -> None:
    """Write then rename: a killed run never leaves half a file where a finished one was."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write(out: Path, task, labels: list[dict], quarantine: list[dict], ledger: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = {"id": task.columns["id"], "image_path": task.columns["image"], "text": task.columns["text"], "label": task.label}
    for rows, columns, name in ((labels, LABEL_COLUMNS, LABELS_FILE), (quarantine, QUARANTINE_COLUMNS, QUARANTINE_FILE)):
        table = pd.DataFrame(rows, columns=columns).rename(columns=names)
        _atomic_write(out / name, table.to_csv(index=False))
    _atomic_write(out / LEDGER_FILE, json.dumps(ledger, indent=2, sort_keys=False) + "\n")


def money(usd: float | None) -> str:
    return "unknown" if usd is None else f"${usd:.4f}"


def rate(rpm: float | None) -> str:
    return "n/a" if rpm is None else f"{rpm:.0f} req/min"


def pace(ledger: dict[str, Any]) -> str:
    """``achieved N req/min (limit M)`` and the token rate, online; a batch's pace is the provider's."""
    if ledger.get("mode") == "batch":
        return "through the Batch API"
    return (
        f"achieved {rate(ledger['achieved_requests_per_minute'])} (limit {ledger['limits']['requests_per_minute']:g}){token_rate(ledger)}"
    )


def token_rate(ledger: dict[str, Any]) -> str:
    """`` and N tok/min (limit M)`` when --tpm was given."""
    limit, achieved = ledger["limits"]["tokens_per_minute"], ledger["achieved_tokens_per_minute"]
    if limit is None:
        return ""
    return f" and {'n/a' if achieved is None else f'{achieved:,.0f}'} tok/min (limit {limit:,.0f})"


def progress(done: int, total: int, labeled: int, cached: int, quarantined: int, stats: dict, elapsed: float) -> str:
    tokens = stats.get("prompt_tokens", 0) + stats.get("completion_tokens", 0)
    return (
        f"[label] {done}/{total} rows  labeled {labeled}  cached {cached}  quarantined {quarantined}  "
        f"requests {stats.get('requests', 0)}  tokens {tokens:,}  cost {money(stats.get('cost_usd', 0.0))}  "
        f"{rate(stats.get('achieved_rpm'))}  {elapsed:.1f}s"
    )


def summary(ledger: dict[str, Any], out: Path) -> str:
    rows = ledger["rows"]
    reasons = ", ".join(f"{k} {v}" for k, v in rows["quarantined_by_reason"].items()) or "none"
    tokens = ledger["tokens"]
    lines = [
        f"[label] {ledger['status']}: {rows['labeled']}/{rows['total']} rows labeled "
        f"({rows['labeled_now']} new, {rows['cached']} from cache), {rows['quarantined']} quarantined ({reasons}), "
        f"{rows['not_labeled']} not labeled",
        f"  requests {ledger['requests']} (429s {ledger['http_429']}, retries {ledger['retries']})  "
        f"tokens {tokens['prompt']:,} prompt + {tokens['completion']:,} completion  cost {money(ledger['cost_usd'])}  "
        f"{pace(ledger)}  elapsed {ledger['elapsed_s']:.1f}s",
        f"  output: {out / LABELS_FILE}, {out / QUARANTINE_FILE}, {out / LEDGER_FILE}",
    ]
    if ledger.get("runs", 0) > 1:  # what the folder's labels cost in all, killed runs included
        total = ledger["totals"]
        lines.insert(
            2,
            f"  all {ledger['runs']} runs into this folder: requests {total['requests']}  "
            f"rows labeled {total['rows_labeled']}  tokens {total['tokens']['prompt']:,} prompt + "
            f"{total['tokens']['completion']:,} completion  cost {money(total['cost_usd'])}",
        )
    return "\n".join(lines)
