"""Labeling throughput against a rate-limited loopback API: the seed's threads, ray.data.llm, platform.label.

    .venv/bin/python -m bench.label_throughput [--small | --full]

``--small`` (default): 150 posts; ``--full``: 600 posts. Both: a limit of 600 requests/min, 0.5 s
a reply, 8 requests at a time where a method has that knob. Run from the repository root.

The server is tests/openai_server.py's ``FakeOpenAI`` behind a token-bucket rpm limit
(bench/limited_server.py: 429 with Retry-After once over it). The posts are a synthetic posts.csv
with one tiny distinct JPEG each, in the seed's social layout (platform/label/inputs.py), in a
temporary folder. Methods, one after another on the same server:
- seed: a ThreadPoolExecutor of 8 calling the synchronous ``openai`` client (its default 2 retries);
- ray.data.llm: ``build_processor(HttpRequestProcessorConfig(url, qps=<limit>, max_retries=4))``,
  one actor (its qps holds per actor);
- platform: ``python -m platform.label <folder> --base-url ... --rpm 600`` (a subprocess with its own
  Ray), then the same command again on the same output and cache.

Then the platform alone, each on a fresh server and output folder, each run then re-run:
- faulty: 5% of the posts get a 500, 5% a malformed body, 2% a stall past ``--timeout`` on their
  first call (``FakeOpenAI``'s script), under the same rpm limit;
- token-limited: ``--tpm`` below what the rpm limit allows, against a server that counts tokens as
  OpenAI does (its own prompt count, 1000 a request, ~3.5x our 4-characters-a-token estimate, plus
  ``max_tokens``): the platform learns the ratio from the replies' usage;
- batch: ``--batch`` on the clean posts (the server's Batch API), its cost a row beside online's,
  both at gpt-4o-mini's prices.

Figures, from the server's own log of calls: achieved rate = calls let in by the limit (not 429) as
a share of the most it allows between a method's first and last such call (the bucket's burst plus
the rate times that span; target >= 0.98 for the platform); for the token limit, tokens let in
over the most the token bucket allows; 429s received, rows lost (not labeled: target 0), and the
server calls of each re-run (target 0: every answer is cached). The last line is one JSON object of
the headline figures.
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import openai
import pandas as pd
from PIL import Image

from bench.common import child_env, parse_setting, print_summary, run_timed
from bench.limited_server import RateLimitedOpenAI
from platform.label.reply import ReplyError
from platform.label.task import load as load_task

KEY = "test-key"  # the loopback server's key; never a real one
MODEL = "openai/gpt-4o-mini"
TASK = load_task("gender_bias")
RPM = 600
TPM = 300_000  # ~4.3 requests/s at the server's count: binding below RPM's 10
LATENCY_S = 0.5
TIMEOUT_S = 2.0  # a stall (the server's slow_s) outlasts it
SEED_THREADS = 8
SETTINGS = {"small": 150, "full": 600}
FAULTS = {"500": 20, "malformed": 20, "slow": 50}  # one post in N gets this on its first call


@dataclass
class Outcome:
    method: str
    calls: list[dict]
    """The server's log entries of this method's calls."""
    labeled: int
    rows: int
    wall_s: float
    cost_per_row: float = 0.0

    def rate_share(self, burst: int) -> float:
        """Calls the limit let in (not 429) as a share of the most it lets through from the first to
        the last of them: ``burst`` at once, then the rate."""
        answered = sorted(c["t"] for c in self.calls if c["status"] != 429)
        if not answered:
            return 0.0
        return len(answered) / (burst + (answered[-1] - answered[0]) * RPM / 60)

    def count(self, status: int) -> int:
        return sum(1 for c in self.calls if c["status"] == status)

    def line(self, burst: int) -> str:
        return (
            f"{self.rate_share(burst):6.3f} of the limit  429s {self.count(429):4d}  labeled {self.labeled}/{self.rows}"
            f"  calls {len(self.calls)}  wall {self.wall_s:.1f}s"
        )


def write_posts(folder: Path, rows: int, marks: dict[int, str] | None = None) -> list[dict]:
    """posts.csv + images/ as the seed's scraper left them; returns the rows with their image bytes.
    ``marks``: a caption suffix by row (the server's script keys)."""
    (folder / "images").mkdir(parents=True)
    posts = []
    for i in range(rows):
        path = folder / "images" / f"p{i}.jpg"
        Image.new("RGB", (16, 16), (i % 256, i * 7 % 256, i * 13 % 256)).save(path)
        caption = f"a day at the lake, post {i}{(marks or {}).get(i, '')}"
        posts.append({"post_id": f"p{i}", "image_path": f"images/p{i}.jpg", "caption": caption})
    pd.DataFrame(posts).assign(upvotes=1).to_csv(folder / "posts.csv", index=False)
    return [{**post, "image": (folder / post["image_path"]).read_bytes(), "mime": "image/jpeg"} for post in posts]


def run_seed(server: RateLimitedOpenAI, posts: list[dict]) -> Outcome:
    client = openai.OpenAI(api_key=KEY, base_url=server.url)

    def label(post: dict) -> bool:
        try:
            reply = client.chat.completions.create(**TASK.request(MODEL, post["image"], post["mime"], post["caption"], structured=False))
            TASK.parse(reply.choices[0].message.content)
            return True
        except (openai.OpenAIError, ReplyError):
            return False  # the seed logged the error and moved on: the row stays unlabeled

    start, started = server.call_count, time.monotonic()
    with ThreadPoolExecutor(SEED_THREADS) as pool:
        labeled = sum(pool.map(label, posts))
    return Outcome("seed (8 threads)", server.calls_since(start), labeled, len(posts), time.monotonic() - started)


def ray_data_llm_payload(row: dict) -> dict:
    """ray.data.llm's preprocess: the same request the seed and the platform send."""
    return {"payload": TASK.request(MODEL, row["image"], row["mime"], row["caption"], structured=False)}


def ray_data_llm_label(row: dict) -> dict:
    """ray.data.llm's postprocess: whether the reply parsed into a valid score."""
    try:
        TASK.parse(row["http_response"]["choices"][0]["message"]["content"])
        return {"labeled": True}
    except (KeyError, IndexError, TypeError, ReplyError):
        return {"labeled": False}


def run_ray_data_llm(server: RateLimitedOpenAI, posts: list[dict]) -> Outcome | str:
    """ray.data.llm's HTTP processor, or why it could not run."""
    try:
        from ray.data.llm import HttpRequestProcessorConfig, build_processor
    except ImportError as err:
        return f"skipped: ray.data.llm does not import ({err})"
    import ray
    import ray.data

    from platform import cluster

    cluster.start()
    config = HttpRequestProcessorConfig(
        url=f"{server.url}/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        qps=int(RPM / 60),
        max_retries=4,
        concurrency=1,
        batch_size=16,
    )
    processor = build_processor(config, preprocess=ray_data_llm_payload, postprocess=ray_data_llm_label)
    start, started = server.call_count, time.monotonic()
    try:
        results = processor(ray.data.from_items(posts)).take_all()
    except Exception as err:  # noqa: BLE001 - a failed peer is a result to print, not a crash
        return f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    finally:
        ray.shutdown()
    labeled = sum(1 for row in results if row["labeled"])
    return Outcome("ray.data.llm (1 actor)", server.calls_since(start), labeled, len(posts), time.monotonic() - started)


def run_platform(server: RateLimitedOpenAI, folder: Path, out: Path, method: str, *flags: str) -> Outcome:
    command = [
        "-m",
        "platform.label",
        str(folder),
        "--out",
        str(out),
        "--base-url",
        server.url,
        "--model",
        MODEL,
        "--concurrency",
        str(SEED_THREADS),
        *(flags or ("--rpm", str(RPM))),
    ]
    start, started = server.call_count, time.monotonic()
    run = run_timed(command, child_env(OPENROUTER_API_KEY=KEY), timeout=900)
    if run.returncode != 0:
        raise SystemExit(f"python -m platform.label failed (exit {run.returncode}):\n{run.tail()}")
    ledger = json.loads((out / "ledger.json").read_text())
    return Outcome(
        method,
        server.calls_since(start),
        ledger["rows"]["labeled"],
        ledger["rows"]["total"],
        time.monotonic() - started,
        ledger["cost_usd"] / max(1, ledger["rows"]["labeled_now"]),
    )


def fault_marks(rows: int) -> tuple[dict[int, str], dict[str, list[str]]]:
    """Caption suffixes and the server's script: each fault on one row in N, on its first call."""
    marks, script = {}, {}
    for offset, (fault, every) in enumerate(FAULTS.items()):
        for i in range(offset, rows, every):
            marks[i] = f" #{fault}-{i}#"
            script[marks[i].strip()] = [fault]
    return marks, script


def run_faulty(scratch: Path, rows: int) -> tuple[Outcome, Outcome, int]:
    """The platform and its re-run against a server that fails some first calls; and the burst."""
    marks, script = fault_marks(rows)
    folder = scratch / "faulty"
    write_posts(folder, rows, marks)
    with RateLimitedOpenAI(RPM, key=KEY, latency=LATENCY_S, script=script, slow_s=TIMEOUT_S * 2) as server:
        flags = ("--rpm", str(RPM), "--timeout", str(TIMEOUT_S), "--backoff", "0.2")
        first = run_platform(server, folder, scratch / "faulty-labeled", "platform.label, faulty server", *flags)
        rerun = run_platform(server, folder, scratch / "faulty-labeled", "re-run", *flags)
    return first, rerun, server.capacity


def run_token_limited(scratch: Path, rows: int) -> tuple[Outcome, Outcome, float]:
    """The platform and its re-run under --tpm, and the share of the server's token limit used."""
    folder = scratch / "tokens"
    write_posts(folder, rows)
    with RateLimitedOpenAI(RPM, tpm=TPM, key=KEY, latency=LATENCY_S) as server:
        flags = ("--rpm", str(RPM), "--tpm", str(TPM))
        first = run_platform(server, folder, scratch / "tokens-labeled", "platform.label, token limit", *flags)
        share = server.tokens_share(0)
        rerun = run_platform(server, folder, scratch / "tokens-labeled", "re-run", *flags)
    return first, rerun, share


def main() -> int:
    args = parse_setting(__doc__)
    rows = SETTINGS["full" if args.full else "small"]
    with tempfile.TemporaryDirectory(prefix="bench-label-") as scratch_dir:
        scratch = Path(scratch_dir)
        with RateLimitedOpenAI(RPM, key=KEY, latency=LATENCY_S) as server:
            folder = scratch / "social"
            posts = write_posts(folder, rows)
            seed = run_seed(server, posts)
            peer = run_ray_data_llm(server, posts)
            first = run_platform(server, folder, scratch / "labeled", "platform.label")
            rerun = run_platform(server, folder, scratch / "labeled", "platform.label re-run")
            batch = run_platform(server, folder, scratch / "batch-labeled", "platform.label --batch", "--batch", "--poll", "0.5")
        faulty, faulty_rerun, burst = run_faulty(scratch, rows)
        tokens, tokens_rerun, tokens_share = run_token_limited(scratch, rows)
    outcomes = [seed, peer, first] if isinstance(peer, Outcome) else [seed, first]
    lines = [(o.method, o.line(burst)) for o in outcomes]
    if not isinstance(peer, Outcome):
        lines.insert(1, ("ray.data.llm (1 actor)", peer))
    lines += [
        ("re-run server calls", f"{len(rerun.calls)} (target 0); labeled {rerun.labeled}/{rerun.rows} from the cache"),
        ("platform / seed rate", f"{first.rate_share(burst) / seed.rate_share(burst):.2f}"),
    ]
    if isinstance(peer, Outcome):
        lines.append(("platform / ray.data.llm rate", f"{first.rate_share(burst) / peer.rate_share(burst):.2f}"))
    failed = sum(1 for c in faulty.calls if c["status"] not in (200, 429))
    lines += [
        (faulty.method, f"{faulty.line(burst)}  (failed calls {failed}); re-run calls {len(faulty_rerun.calls)}"),
        (
            tokens.method,
            f"{tokens_share:6.3f} of {TPM:,} tokens/min  429s {tokens.count(429):4d}  labeled "
            f"{tokens.labeled}/{tokens.rows}  wall {tokens.wall_s:.1f}s; re-run calls {len(tokens_rerun.calls)}",
        ),
        (
            "cost a row: online, batch",
            f"${first.cost_per_row * 1e6:.1f}, ${batch.cost_per_row * 1e6:.1f} per million rows "
            f"(batch / online {batch.cost_per_row / first.cost_per_row:.2f}); batch labeled "
            f"{batch.labeled}/{batch.rows} in {batch.wall_s:.1f}s",
        ),
    ]
    print_summary(
        f"labeling throughput: {rows} posts, limit {RPM} requests/min, {LATENCY_S}s a reply",
        lines,
        [
            f"rate = calls let in / ({burst} + {RPM / 60:g}/s x the span of a method's such calls): Ray start-up excluded",
            "wall = the method's whole time, the platform's including its Ray start-up",
        ],
        headline={
            "rate_share": round(first.rate_share(burst), 3),
            "platform_vs_seed": round(first.rate_share(burst) / seed.rate_share(burst), 3),
            "faulty_rate_share": round(faulty.rate_share(burst), 3),
            "faulty_rows_lost": faulty.rows - faulty.labeled,
            "tpm_share": round(tokens_share, 3),
            "tpm_rows_lost": tokens.rows - tokens.labeled,
            "rerun_calls": len(rerun.calls) + len(faulty_rerun.calls) + len(tokens_rerun.calls),
            "batch_vs_online_cost": round(batch.cost_per_row / first.cost_per_row, 3),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
