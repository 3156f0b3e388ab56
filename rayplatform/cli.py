"""The ``rayplatform`` console script: one command for the platform's commands, from any folder.

    rayplatform run asl --tier smoke    rayplatform tune asl ...    rayplatform label posts.csv ...
    rayplatform predict RUN_DIR x ...   rayplatform monitor runs    rayplatform --version
    rayplatform new mytoy               rayplatform run ./mytoy --tier smoke

``rayplatform <command> ...`` is ``python -m platform.<command> ...`` from the repository root;
``rayplatform new NAME`` writes a trainable package to start from (``rayplatform/new.py``).
"""

from __future__ import annotations

import importlib
import sys
from importlib import metadata

import rayplatform  # noqa: F401 - makes `platform` the project's package first

COMMANDS = {
    "run": "train a trainable on Ray Train",
    "tune": "sweep tiers and hyperparameters with Ray Tune and Optuna",
    "label": "label posts through an OpenAI-compatible API on Ray Data",
    "predict": "predict with the best model of a finished run",
    "monitor": "show runs and their progress",
    "new": "write a minimal working trainable package NAME/ here, to start from",
}
MODULES = {"new": "rayplatform.new"}  # the others: platform.<command>


def usage() -> str:
    lines = ["usage: rayplatform <command> [options]   (rayplatform <command> --help for its options)", ""]
    lines += [f"  {name:<8} {text}" for name, text in COMMANDS.items()]
    return "\n".join([*lines, "", "  --version  the installed version"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"rayplatform {metadata.version('rayplatform')}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; known: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(MODULES.get(argv[0], f"platform.{argv[0]}")).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
