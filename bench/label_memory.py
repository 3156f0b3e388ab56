"""The labeling driver's memory as its source grows: N and 4N posts of large images, against the loopback API.

    .venv/bin/python -m bench.label_memory [--small | --full]

``--small`` (default): 100 and 400 posts; ``--full``: 500 and 2000. Each post's image is a distinct
320x320 PNG of noise (300 KB: noise does not compress), so the source holds 30 and 120 MB
(``--full``: 150 and 600 MB). Run from the repository root.

Each size: a fresh posts.csv in a temporary folder, then ``python -m platform.label <folder>
--base-url <loopback> --rps 100 --concurrency 8`` (a subprocess with its own local Ray) against
tests/openai_server.py's ``FakeOpenAI`` in this process, every post labeled (checked in the
ledger). The driver's RSS (psutil, that one process: Ray's processes are its children, not counted;
the object store's pages it wrote are) is sampled every 20 ms from its start to its exit.

Figures: the driver's peak RSS at each size; ``driver_rss_ratio`` = peak at 4N / peak at N (target
<= 1.2: flat); ``growth_of_image_growth`` = (peak at 4N - peak at N) / (image bytes at 4N - at N),
the share of the extra images the driver holds (target near 0; a driver that loads every image
holds them all, 1 or more). The last line is one JSON object of the headline figures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
from PIL import Image

from bench.common import REPO_ROOT, child_env, parse_setting, print_summary

sys.path.insert(0, str(REPO_ROOT / "tests"))  # tests/ is not a package: its modules import each other by name
from openai_server import FakeOpenAI  # noqa: E402

KEY = "test-key"  # the loopback server's key; never a real one
SIDE = 320  # pixels: 320 x 320 x 3 bytes of noise, ~300 KB as a PNG
SETTINGS = {"small": 100, "full": 500}
SAMPLE_S = 0.02
MIB = 2**20


def write_posts(folder: Path, rows: int) -> int:
    """posts.csv + images/ of ``rows`` distinct noise images; returns the images' bytes."""
    (folder / "images").mkdir(parents=True)
    noise = np.random.default_rng(rows)
    posts = []
    for i in range(rows):
        Image.fromarray(noise.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(folder / "images" / f"p{i}.png")
        posts.append({"post_id": f"p{i}", "image_path": f"images/p{i}.png", "caption": f"a large picture, post {i}"})
    pd.DataFrame(posts).assign(upvotes=1).to_csv(folder / "posts.csv", index=False)
    return sum((folder / p["image_path"]).stat().st_size for p in posts)


def run_sampled(args: list[str], env: dict[str, str], timeout: float) -> tuple[int, int, str]:
    """``python args...`` from the repo root: (exit code, the process's peak RSS, its last lines)."""
    with subprocess.Popen(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    ) as process:
        peak, driver = [0], psutil.Process(process.pid)

        def sample() -> None:
            while process.poll() is None:
                try:
                    peak[0] = max(peak[0], driver.memory_info().rss)
                except psutil.Error:
                    return
                time.sleep(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # The whole process group: a killed driver must not leave its local Ray behind.
        watchdog = threading.Timer(timeout, os.killpg, (process.pid, signal.SIGKILL))
        watchdog.start()
        try:
            lines = process.stdout.read().splitlines()
            process.wait()
        finally:
            watchdog.cancel()
        sampler.join()
    return process.returncode, peak[0], "\n".join(lines[-15:])


def measure(rows: int, scratch: Path, server: FakeOpenAI) -> dict:
    folder = scratch / f"posts-{rows}"
    image_bytes = write_posts(folder, rows)
    command = ["-m", "platform.label", str(folder), "--base-url", server.url, "--price-in", "1", "--price-out", "1"]
    command += ["--rps", "100", "--concurrency", "8"]
    started = time.monotonic()
    code, peak, tail = run_sampled(command, child_env(OPENROUTER_API_KEY=KEY), timeout=1200)
    if code != 0:
        raise SystemExit(f"python -m platform.label failed (exit {code}):\n{tail}")
    ledger = json.loads((folder / "labeled" / "ledger.json").read_text())
    if ledger["rows"]["labeled"] != rows:
        raise SystemExit(f"{ledger['rows']['labeled']} of {rows} posts labeled:\n{tail}")
    return {"rows": rows, "image_bytes": image_bytes, "peak_rss": peak, "wall_s": time.monotonic() - started}


def main() -> int:
    args = parse_setting(__doc__)
    small = SETTINGS["full" if args.full else "small"]
    with tempfile.TemporaryDirectory(prefix="label-memory-") as scratch, FakeOpenAI(key=KEY, latency=0.02) as server:
        sizes = [measure(rows, Path(scratch), server) for rows in (small, 4 * small)]
    first, last = sizes
    ratio = last["peak_rss"] / first["peak_rss"]
    growth = (last["peak_rss"] - first["peak_rss"]) / (last["image_bytes"] - first["image_bytes"])
    rows = [
        (
            f"{size['rows']} posts",
            f"images {size['image_bytes'] / MIB:6.1f} MiB  driver peak RSS {size['peak_rss'] / MIB:6.1f} MiB  wall {size['wall_s']:.1f}s",
        )
        for size in sizes
    ]
    rows += [
        ("driver_rss_ratio", f"{ratio:.3f} (target <= 1.2)"),
        ("growth_of_image_growth", f"{growth:.3f} (target near 0; a driver holding every image: >= 1)"),
    ]
    print_summary(
        "platform.label driver memory by source size",
        rows,
        headline={
            "driver_rss_ratio": round(ratio, 3),
            "growth_of_image_growth": round(growth, 3),
            "driver_peak_rss_mib": [round(s["peak_rss"] / MIB, 1) for s in sizes],
            "image_mib": [round(s["image_bytes"] / MIB, 1) for s in sizes],
            "rows": [s["rows"] for s in sizes],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
