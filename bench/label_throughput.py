"""Labeling throughput against a rate-limited loopback API: the seed's threads, ray.data.llm, platform.label.

    .venv/bin/python -m bench.label_throughput [--small | --full]

``--small`` (default): 150 posts; ``--full``: 600 posts. Both: a limit of 600 requests/min, 0.5 s
a reply, 8 requests at a time where a method has that knob. Run from the repository root.

The server is tests/openai_server.py's ``FakeOpenAI`` behind a token-bucket rpm limit
(bench/limited_server.py: 429 with Retry-After once over it). The posts are a synthetic posts.csv
with one tiny distinct JPEG each, in the seed's social layout (platform/labeling/inputs.py), in a
temporary folder. Methods, one after another on the same server:
- seed: a ThreadPoolExecutor of 8 calling the synchronous ``openai`` client (its default 2 retries);
- ray.data.llm: ``build_processor(HttpRequestProcessorConfig(url, qps=<limit>, max_retries=4))``,
  one actor (its qps holds per actor);
- platform: ``python -m platform.label <folder> --base-url ... --rpm 600`` (a subprocess with its own
  Ray), then the same command again on the same output and cache.

Figures, from the server's own log of calls: achieved rate = answered (200) calls as a share of
the most the limit allows between a method's first and last answered call (the bucket's burst plus
the rate times that span; target >= 0.95 for the platform), 429s received, rows left unlabeled, and
the server calls of the platform's re-run (target 0: every answer is cached).
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from platform.labeling import prompt

import openai
import pandas as pd
from PIL import Image

from bench.common import child_env, parse_setting, print_summary, run_timed
from bench.limited_server import RateLimitedOpenAI

KEY = "test-key"  # the loopback server's key; never a real one
MODEL = "openai/gpt-4o-mini"
RPM = 600
LATENCY_S = 0.5
SEED_THREADS = 8
SETTINGS = {"small": 150, "full": 600}


@dataclass
class Outcome:
    method: str
    calls: list[dict]
    """The server's log entries of this method's calls."""
    labeled: int
    rows: int
    wall_s: float

    def rate_share(self, burst: int) -> float:
        """Answered calls as a share of the most the limit lets through from the first to the last
        of them: ``burst`` at once, then the rate."""
        answered = sorted(c["t"] for c in self.calls if c["status"] == 200)
        if not answered:
            return 0.0
        return len(answered) / (burst + (answered[-1] - answered[0]) * RPM / 60)

    def count(self, status: int) -> int:
        return sum(1 for c in self.calls if c["status"] == status)

    def line(self, burst: int) -> str:
        return (f"{self.rate_share(burst):6.3f} of the limit  429s {self.count(429):4d}  labeled {self.labeled}/{self.rows}"
                f"  calls {len(self.calls)}  wall {self.wall_s:.1f}s")


def write_posts(folder: Path, rows: int) -> list[dict]:
    """posts.csv + images/ as the seed's scraper left them; returns the rows with their image bytes."""
    (folder / "images").mkdir(parents=True)
    posts = []
    for i in range(rows):
        path = folder / "images" / f"p{i}.jpg"
        Image.new("RGB", (16, 16), (i % 256, i * 7 % 256, i * 13 % 256)).save(path)
        posts.append({"post_id": f"p{i}", "image_path": f"images/p{i}.jpg", "caption": f"a day at the lake, post {i}"})
    pd.DataFrame(posts).assign(upvotes=1).to_csv(folder / "posts.csv", index=False)
    return [{**post, "image": (folder / post["image_path"]).read_bytes(), "mime": "image/jpeg"} for post in posts]


def run_seed(server: RateLimitedOpenAI, posts: list[dict]) -> Outcome:
    client = openai.OpenAI(api_key=KEY, base_url=server.url)

    def label(post: dict) -> bool:
        try:
            reply = client.chat.completions.create(
                model=MODEL, messages=prompt.messages(post["image"], post["mime"], post["caption"]),
                temperature=prompt.GENERATION["temperature"], max_tokens=prompt.GENERATION["max_tokens"])
            prompt.parse_reply(reply.choices[0].message.content)
            return True
        except (openai.OpenAIError, prompt.ReplyError):
            return False  # the seed logged the error and moved on: the row stays unlabeled

    start, started = server.call_count, time.monotonic()
    with ThreadPoolExecutor(SEED_THREADS) as pool:
        labeled = sum(pool.map(label, posts))
    return Outcome("seed (8 threads)", server.calls_since(start), labeled, len(posts), time.monotonic() - started)


def ray_data_llm_payload(row: dict) -> dict:
    """ray.data.llm's preprocess: the same request the seed and the platform send."""
    return {"payload": {"model": MODEL, "messages": prompt.messages(row["image"], row["mime"], row["caption"]),
                        "temperature": prompt.GENERATION["temperature"],
                        "max_tokens": prompt.GENERATION["max_tokens"]}}


def ray_data_llm_label(row: dict) -> dict:
    """ray.data.llm's postprocess: whether the reply parsed into a valid score."""
    try:
        prompt.parse_reply(row["http_response"]["choices"][0]["message"]["content"])
        return {"labeled": True}
    except (KeyError, IndexError, TypeError, prompt.ReplyError):
        return {"labeled": False}


def run_ray_data_llm(server: RateLimitedOpenAI, posts: list[dict]) -> Outcome | str:
    """ray.data.llm's HTTP processor, or why it could not run."""
    try:
        from ray.data.llm import HttpRequestProcessorConfig, build_processor
    except ImportError as err:
        return f"skipped: ray.data.llm does not import ({err})"
    from platform import cluster

    import ray
    import ray.data

    cluster.start()
    config = HttpRequestProcessorConfig(url=f"{server.url}/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                                        qps=int(RPM / 60), max_retries=4, concurrency=1, batch_size=16)
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


def run_platform(server: RateLimitedOpenAI, folder: Path, out: Path, method: str) -> Outcome:
    command = ["-m", "platform.label", str(folder), "--out", str(out), "--base-url", server.url, "--model", MODEL,
               "--rpm", str(RPM), "--concurrency", str(SEED_THREADS)]
    start, started = server.call_count, time.monotonic()
    run = run_timed(command, child_env(OPENROUTER_API_KEY=KEY), timeout=900)
    if run.returncode != 0:
        raise SystemExit(f"python -m platform.label failed (exit {run.returncode}):\n{run.tail()}")
    ledger = json.loads((out / "ledger.json").read_text())
    return Outcome(method, server.calls_since(start), ledger["rows"]["labeled"], ledger["rows"]["total"],
                   time.monotonic() - started)


def main() -> int:
    args = parse_setting(__doc__)
    rows = SETTINGS["full" if args.full else "small"]
    with tempfile.TemporaryDirectory(prefix="bench-label-") as scratch, \
            RateLimitedOpenAI(RPM, key=KEY, latency=LATENCY_S) as server:
        folder = Path(scratch) / "social"
        posts = write_posts(folder, rows)
        seed = run_seed(server, posts)
        peer = run_ray_data_llm(server, posts)
        first = run_platform(server, folder, Path(scratch) / "labeled", "platform.label")
        rerun = run_platform(server, folder, Path(scratch) / "labeled", "platform.label re-run")
    outcomes = [seed, peer, first] if isinstance(peer, Outcome) else [seed, first]
    burst = server.capacity
    lines = [(o.method, o.line(burst)) for o in outcomes]
    if not isinstance(peer, Outcome):
        lines.insert(1, ("ray.data.llm (1 actor)", peer))
    lines += [
        ("re-run server calls", f"{len(rerun.calls)} (target 0); labeled {rerun.labeled}/{rerun.rows} from the cache"),
        ("platform / seed rate", f"{first.rate_share(burst) / seed.rate_share(burst):.2f}"),
    ]
    if isinstance(peer, Outcome):
        lines.append(("platform / ray.data.llm rate", f"{first.rate_share(burst) / peer.rate_share(burst):.2f}"))
    print_summary(f"labeling throughput: {rows} posts, limit {RPM} requests/min, {LATENCY_S}s a reply", lines, [
        f"rate = answered calls / ({burst} + {RPM / 60:g}/s x the span of a method's answered calls): Ray start-up excluded",
        "wall = the method's whole time, the platform's including its Ray start-up",
    ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
