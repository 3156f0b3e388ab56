"""The tree passes ruff (pyproject.toml's [tool.ruff]: pyflakes, pycodestyle errors, import order
with platform, trainables and search_spaces first-party, bugbear, pyupgrade) and is formatted by
it, as CI runs them.

    .venv/bin/ruff check . && .venv/bin/ruff format --check .    # by hand; --fix and format mend
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO


@pytest.mark.parametrize("command", [["check", "--output-format", "concise"], ["format", "--check"]], ids=["check", "format"])
def test_the_tree_passes_ruff(command):
    result = subprocess.run([sys.executable, "-m", "ruff", *command, "--no-cache", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


def test_no_file_of_the_tree_is_git_ignored():
    """Ray's ``--working-dir`` upload and ``ray up``'s rsync (cluster.yaml) skip what .gitignore
    names, as a commit does: a pattern meant for the runs folder must not hide ``platform/runs/``."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=REPO, input=tracked, capture_output=True, text=True)
    assert ignored.stdout.split() == [], ignored.stdout
