"""The tree passes ruff (pyproject.toml's [tool.ruff]: pyflakes, pycodestyle errors, import order
with platform, trainables and search_spaces first-party, bugbear, pyupgrade), as CI runs it.

    .venv/bin/ruff check .     # the same by hand; --fix sorts imports
"""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO


def test_the_tree_passes_ruff():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
