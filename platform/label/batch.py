"""Labeling through the OpenAI-compatible Batch API, at its lower price: ``python -m platform.label --batch``.

    OPENAI_API_KEY=... python -m platform.label /path/to/social --batch --base-url https://api.openai.com/v1 \\
        --model gpt-4o-mini [--poll 30] [--batch-discount 0.5] [--budget-usd X]

The rows the cache does not answer become one JSONL line each (the request online mode would send,
``custom_id`` the row's cache key; platform/label/batch_files.py), uploaded with
``files.create(purpose="batch")`` and run by ``batches.create(endpoint="/v1/chat/completions",
completion_window="24h")`` (several batches past 50,000 lines or 190 MB). The driver polls
``batches.retrieve`` every ``--poll`` seconds until the batch is completed, failed, expired or
cancelled, then downloads its output and error files (``files.content``) and books every line as
online mode books an answer: into the cache (labeled rows and invalid replies, which were paid), the
run's attempt log (the ledger's figures, at the batch price: the online price times
``--batch-discount``, ``batch_files.BATCH_DISCOUNT`` for OpenAI) and labels.csv / quarantine.csv.

Paying once: the input file id and the batch id are written to ``<out>/batches.json`` the moment
they exist; a re-run (after a killed driver, say) first resumes polling every batch there that was
not collected yet, adopts a batch created from a saved file whose id was never saved (found by its
``input_file_id`` in ``batches.list``, paged back to the file's upload time however many batches
were created since) rather than creating another, and only then sends what is still unanswered.
A line collected twice (a driver killed while collecting) is booked once.
An expired, failed or cancelled batch: its answered lines are kept (cached, paid); the rest are
quarantined for this run with their reason (``batch_expired: ...``, ``http_500: ...``) and not
cached, so the next run sends them again in a new batch. ``--budget-usd`` is checked before a batch
is created, on the most its rows may cost (prompt estimate plus all of ``max_tokens``, at the batch
price): rows past the budget are not sent (exit 3, as online mode). An API that refuses
``response_format`` in a batch line gets the refused rows again at once in a batch without it
(read by the tolerant parser), and the folder remembers it.

No Ray here: nothing is sent from workers, so the key stays in the driver, read from its
environment (platform/label/secret.py) and never written to any file or line printed.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import openai

from platform.errors import UserError
from platform.label import answers, batch_files, inputs
from platform.label.batch_files import FINAL, MAX_BYTES, MAX_LINES, State

POLL_FAILURES = 5  # consecutive failed polls before the driver gives up (a re-run resumes)
UPLOAD_TIMEOUT_S = 600.0
LIST_PAGE = 100  # batches a page of batches.list: the most the API gives


def discounted(price: tuple[float, float] | None, discount: float) -> tuple[float, float] | None:
    return None if price is None else (price[0] * discount, price[1] * discount)


class Books:
    """This run's cache shard and attempt log, and the ledger's counters."""

    def __init__(self, run: dict[str, Any]):
        self._shard, self._log = answers.Shard(Path(run["shard"])), answers.Shard(Path(run["attempts"]))
        self.counts: Counter = Counter()
        self.cost = 0.0

    def book(self, record: dict[str, Any], kind: str | None) -> None:
        """The cache first, then the attempt log: a kill between the two loses a log line, never an answer."""
        if answers.cacheable(record):
            self._shard.write(record)
        if kind is None:  # never run: no request, nothing paid
            self.counts[record["reason"].split(":", 1)[0]] += 1
            return
        self._log.write(
            {
                "t": round(time.time(), 3),
                "kind": kind,
                "retry": False,
                "batch": record["batch"],
                **{k: record[k] for k in ("prompt_tokens", "completion_tokens", "cost_usd")},
            }
        )
        self.counts.update(
            {"requests": 1, kind: 1, "prompt_tokens": record["prompt_tokens"], "completion_tokens": record["completion_tokens"]}
        )
        self.cost += record["cost_usd"]

    def close(self) -> None:
        self._shard.close()
        self._log.close()


def label(task, todo: list[dict], *, args, price, key: str, run: dict, out: Path, cached: dict) -> tuple[dict, dict]:
    """Labels ``todo`` through batches (resuming the folder's open ones first); returns (results by
    key, stats for the ledger). ``price``: already the batch price."""
    client = openai.OpenAI(api_key=key, base_url=args.base_url, timeout=args.timeout, max_retries=args.max_retries)
    state, books, rows = State(out), Books(run), {r["key"]: r for r in todo}
    for row in todo:
        row["usd"] = batch_files.estimate_usd(task, row, price)
    job = {
        "task": task,
        "client": client,
        "args": args,
        "price": price,
        "state": state,
        "books": books,
        "rows": rows,
        "cached": cached,
        "results": {},
        "key": key,
        "touched": [],
    }
    try:
        if state.open():
            print(f"[label] resuming {len(state.open())} batch(es) saved in {state.path}: nothing is sent again", flush=True)
            finish(job, state.open(), sent=None)
        not_sent: set[str] = set()
        while send := [r for r in todo if r["key"] not in job["results"] and r["key"] not in not_sent]:
            fits = within_budget(send, args.budget_usd, books.cost)
            not_sent |= {r["key"] for r in send[len(fits) :]}
            if len(fits) < len(send):
                print(
                    f"[label] --budget-usd {args.budget_usd:g}: {len(send) - len(fits)} rows not sent (the most "
                    f"they may cost, ${sum(r['usd'] for r in send[len(fits) :]):.4f} at the batch price, is over "
                    "what is left)",
                    flush=True,
                )
            if not fits:
                break
            entries = submit(job, fits, out)  # a row whose image changed since the scan is quarantined, not sent
            finish(job, entries, sent={r["key"] for r in fits} - set(job["results"]))
    except openai.APIError as err:
        raise UserError(_explain(err, args.base_url, key, state.path)) from None
    finally:
        books.close()
    stats = {**books.counts, "cost_usd": books.cost, "batches": job["touched"]}
    return job["results"], stats


def within_budget(rows: list[dict], budget: float | None, spent: float) -> list[dict]:
    """The leading rows whose most possible cost fits in what is left of ``--budget-usd``."""
    if budget is None:
        return rows
    left, fits = budget - spent, []
    for row in rows:
        left -= row["usd"]
        if left < 0:
            break
        fits.append(row)
    return fits


def submit(job: dict, rows: list[dict], out: Path) -> list[dict]:
    """Uploads ``rows`` as batch input files and creates their batches, saving each id at once."""
    entries, state, args = [], job["state"], job["args"]
    for chunk in _chunks(job["task"], rows, out, args.model, state.structured, job["results"]):
        entry = {
            "input_file_id": None,
            "id": None,
            "rows": chunk["rows"],
            "estimate_usd": round(chunk["usd"], 6),
            "structured": state.structured,
            "status": "uploading",
            "collected": False,
        }
        try:
            with chunk["path"].open("rb") as file:
                uploaded = job["client"].with_options(timeout=max(args.timeout, UPLOAD_TIMEOUT_S)).files.create(file=file, purpose="batch")
        finally:
            chunk["path"].unlink(missing_ok=True)  # it holds the images: not left in the output folder
        # When it was uploaded: a batch listed as created before that cannot be its batch (``_adopt``).
        entry.update(input_file_id=uploaded.id, uploaded_at=uploaded.created_at, status="uploaded")
        state.batches.append(entry)
        state.save()
        _create(job, entry)
        print(
            f"[label] batch {entry['id']} created: {entry['rows']} requests to {args.model}, at most "
            f"${entry['estimate_usd']:.4f} at the batch price; its id is saved in {state.path} (a re-run "
            "resumes polling it)",
            flush=True,
        )
        entries.append(entry)
    return entries


def _chunks(task, rows: list[dict], out: Path, model: str, structured: bool, results: dict):
    """Batch input files of at most MAX_LINES lines and MAX_BYTES, written one at a time, reading
    one image at a time; a row whose image is no longer the one scanned goes to ``results``, quarantined."""
    path = out / ".batch-input.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    chunk = {"path": path, "rows": 0, "bytes": 0, "usd": 0.0}
    file = path.open("w", encoding="utf-8")
    for row in rows:
        image = inputs.planned_image(row["image_path"], row["digest"])
        if isinstance(image, str):
            results[row["key"]] = {**batch_files.blank(task, row["key"], row["id"], model, None), "status": "quarantined", "reason": image}
            continue
        line = batch_files.request_line(task, row, image, model, structured)
        if chunk["rows"] and (chunk["rows"] >= MAX_LINES or chunk["bytes"] + len(line) > MAX_BYTES):
            file.close()
            yield chunk
            chunk = {"path": path, "rows": 0, "bytes": 0, "usd": 0.0}
            file = path.open("w", encoding="utf-8")
        file.write(line)  # json.dumps writes ASCII: characters are bytes
        chunk.update(rows=chunk["rows"] + 1, bytes=chunk["bytes"] + len(line), usd=chunk["usd"] + row["usd"])
    file.close()
    if chunk["rows"]:
        yield chunk


def _create(job: dict, entry: dict) -> None:
    """Creates the batch of a saved input file once: never retried blindly (a lost reply would make
    a second batch, paid twice), but adopted from ``batches.list`` when one exists already."""
    client = job["client"]
    found = _adopt(client, entry) if entry["status"] != "uploaded" else None
    if found is None:
        try:
            found = client.with_options(max_retries=0).batches.create(
                input_file_id=entry["input_file_id"], endpoint=batch_files.ENDPOINT, completion_window=batch_files.COMPLETION_WINDOW
            )
        except (openai.APIConnectionError, openai.InternalServerError):
            found = _adopt(client, entry)  # it may have been created before the error
            if found is None:
                raise
    entry.update(id=found.id, status=found.status)
    job["state"].save()


def _adopt(client, entry: dict):
    """The batch made from ``entry``'s input file, if any: the account's batches, newest first, page
    after page (any number may have been made since), down to the first created before the file."""
    uploaded_at = entry.get("uploaded_at") or 0  # not saved by older versions: every page
    for listed in client.batches.list(limit=LIST_PAGE):  # the client asks for the next page ``after`` the last id
        if listed.input_file_id == entry["input_file_id"]:
            return listed
        if listed.created_at < uploaded_at:
            return None
    return None


def finish(job: dict, entries: list[dict], sent: set[str] | None) -> None:
    """Creates what a killed driver left uncreated, polls every batch to its end, collects each."""
    for entry in entries:
        if entry["id"] is None:
            entry["status"] = "resumed"
            _create(job, entry)
    wait(job, entries)
    for entry in entries:
        collect(job, entry, sent)


def wait(job: dict, entries: list[dict]) -> None:
    """Polls every ``--poll`` seconds until each batch has ended, saying so when something changed."""
    failures, said = 0, {}
    while pending := [e for e in entries if e["status"] not in FINAL]:
        try:
            for entry in pending:
                batch = job["client"].batches.retrieve(entry["id"])
                counts = batch.request_counts
                entry.update(
                    status=batch.status,
                    output_file_id=batch.output_file_id,
                    error_file_id=batch.error_file_id,
                    errors=_errors(batch),
                    done=counts.completed if counts else 0,
                    failed=counts.failed if counts else 0,
                )
            failures = 0
        except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError):
            failures += 1
            if failures >= POLL_FAILURES:
                raise
        job["state"].save()
        for entry in pending:
            line = f"{entry['status']}, {entry.get('done', 0)}/{entry['rows']} done, {entry.get('failed', 0)} failed"
            if said.get(entry["id"]) != line:
                said[entry["id"]] = line
                print(f"[label] batch {entry['id']}: {line}", flush=True)
        if any(e["status"] not in FINAL for e in entries):
            time.sleep(job["args"].poll)


def _errors(batch) -> str:
    data = getattr(batch.errors, "data", None) or []
    return "; ".join(" ".join(str(e.message or e.code).split())[:160] for e in data)


def collect(job: dict, entry: dict, sent: set[str] | None) -> None:
    """Books every line of an ended batch; the rows this run sent that got no line are quarantined
    (not cached: a re-run sends them again). A line an earlier collection booked is not booked again."""
    results, rows, cached = job["results"], job["rows"], job["cached"]
    lines = []
    for field in ("output_file_id", "error_file_id"):
        if entry.get(field):
            lines += batch_files.parse_lines(job["client"].files.content(entry[field]).text)
    for line in lines:
        key = line["custom_id"]
        if (cached.get(key) or {}).get("batch") == entry["id"]:
            results[key] = cached[key]
            continue
        record = batch_files.blank(job["task"], key, rows.get(key, {}).get("id", ""), job["args"].model, entry["id"])
        kind = batch_files.read_result(job["task"], line, record, job["price"])
        if kind == "format_refused":
            kind = "http_400"
            if entry["structured"]:
                job["state"].structured = False  # the refused rows go again at once, without it
            else:
                record["status"] = "quarantined"
        record["reason"] = record["reason"].replace(job["key"], "***")
        job["books"].book(record, kind)
        if record["status"] != "skipped":
            results[key] = record
    why = entry.get("errors") or "no result for this request"
    for key in (sent or set()) - {line["custom_id"] for line in lines}:
        results[key] = {
            **batch_files.blank(job["task"], key, rows[key]["id"], job["args"].model, entry["id"]),
            "status": "quarantined",
            "reason": f"batch_{entry['status']}: {why}",
        }
    entry["collected"] = True
    job["state"].save()
    job["touched"].append({k: entry.get(k) for k in ("id", "input_file_id", "status", "rows", "done", "failed")})


def ledger_fields(stats: dict, args, online_price) -> dict[str, Any]:
    """What ledger.json says about batch mode beside online mode's figures."""
    # Online mode's request, token and concurrency limits do not apply: the provider's batch limits do.
    limits = {"budget_usd": args.budget_usd, "max_retries": args.max_retries, "timeout_s": args.timeout}
    return {
        "mode": "batch",
        "limits": limits,
        "achieved_requests_per_minute": None,
        "achieved_tokens_per_minute": None,
        "batch": {
            "discount": args.batch_discount,
            "poll_s": args.poll,
            "online_prices_usd_per_mtok": {"prompt": online_price[0], "completion": online_price[1]} if online_price else None,
            "not_run_by_reason": {k: v for k, v in stats.items() if k.startswith("batch_") and k != "batches"},
            "batches": stats.get("batches", []),
        },
    }


def _explain(err: openai.APIError, base_url: str, key: str, saved: Path) -> str:
    """One error line for an API failure the Batch API flow cannot go on from."""
    status = getattr(err, "status_code", None)
    if status in (401, 403):
        return f"the API at {base_url} rejected the key (HTTP {status}): check OPENROUTER_API_KEY or OPENAI_API_KEY"
    if status in (404, 405):
        return (
            f"HTTP {status} from {base_url}: this API has no Batch API (files and batches endpoints; "
            "OpenRouter has none): label without --batch"
        )
    said = " ".join(str(err.message if hasattr(err, "message") else err).split())[:160].replace(key, "***")
    return f"the Batch API at {base_url} failed: {said}; the batch ids are saved in {saved}: run again to resume"
