"""What the labeling tests share: the test API key (in this process's environment before the shared
test Ray starts), the prices they pass, ``label`` (the command in a subprocess with exactly one key)
``start_label`` (the same in the background) and ``write_posts`` (a posts.csv with tiny distinct images).

    .venv/bin/python -m pytest tests/test_label.py tests/test_label_faults.py
"""

from __future__ import annotations

import bisect
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from helpers import REPO, TEST_ENV
from openai_replies import PROMPT_TOKENS
from PIL import Image

KEY = "sk-test-9f8e7d6c5b4a"
# The Labeler actors read the key from their own environment, never through Ray: the shared test
# Ray (tests/conftest.py, started after every test module is imported) gets it the way a cluster's
# workers must, in the environment its raylet starts in.
os.environ["OPENROUTER_API_KEY"] = KEY
PRICES = ["--price-in", "1", "--price-out", "1"]  # 1000 + 20 tokens a request: $0.00102
COST_PER_REQUEST = (PROMPT_TOKENS + 20) / 1e6


def label_env(key: str | None = KEY, address: str | None = None) -> dict[str, str]:
    """The test environment with exactly this key (none: no key at all) and this Ray address."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENROUTER_API_KEY", "OPENAI_API_KEY")}
    env.update(TEST_ENV)
    if key is not None:
        env["OPENROUTER_API_KEY"] = key
    if address:
        env["RAY_ADDRESS"] = address
    return env


def label(*args: str, key: str | None = KEY, address: str | None = None, timeout: float = 300):
    """``python -m platform.label args...`` with exactly this key in the environment."""
    return subprocess.run(
        [sys.executable, "-m", "platform.label", *args],
        cwd=REPO,
        env=label_env(key, address),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_label(*args: str, address: str | None = None, output=subprocess.DEVNULL) -> subprocess.Popen:
    """The same command in the background, in a session of its own: a test can SIGKILL its group."""
    return subprocess.Popen(
        [sys.executable, "-m", "platform.label", *args],
        cwd=REPO,
        env=label_env(KEY, address),
        start_new_session=True,
        stdout=output,
        stderr=output,
        text=True,
    )


def write_posts(folder: Path, captions: list[str], extra: list[tuple[str, str, str]] = ()) -> Path:
    """posts.csv in the seed's format with one tiny distinct JPEG a caption, plus ``extra`` raw rows."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, caption in enumerate(captions):
        Image.new("RGB", (8, 8), (i * 7 % 256, i * 13 % 256, 90)).save(folder / "images" / f"p{i}.jpg")
        rows.append((f"p{i}", f"images/p{i}.jpg", caption))
    rows += list(extra)
    pd.DataFrame(rows, columns=["post_id", "image_path", "caption"]).assign(upvotes=1).to_csv(folder / "posts.csv", index=False)
    return folder


def max_in_window(times: list[float], width: float) -> int:
    times = sorted(times)
    return max((bisect.bisect_left(times, t + width) - i for i, t in enumerate(times)), default=0)


def assert_key_nowhere(out: Path, *texts: str) -> None:
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(errors="replace"), path
    for text in texts:
        assert KEY not in text
