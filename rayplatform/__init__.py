"""The platform, installed: ``import rayplatform`` in a notebook, ``rayplatform run asl`` anywhere.

    rayplatform run asl --tier smoke          # also tune, label, predict, monitor; rayplatform --version

    import rayplatform
    run = rayplatform.train("asl", tier="smoke", sets={"epochs": 2})
    run.manifest["metric"], run.history.tail(), run.predict(["sequence.parquet"])

The package that does the work must be named ``platform``, which is also a standard-library
module; an installed package comes after the standard library on ``sys.path``, and a notebook has
often imported the standard module already. So importing this package (the console script does)
first makes ``platform`` the project's package, a strict superset of the standard module: it puts
the project's root first on ``sys.path`` and on ``PYTHONPATH`` (which the Ray workers this
process starts inherit), and swaps the package in for a standard module already imported.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""Where ``platform/`` lives: the repository (an editable install) or site-packages."""


def _platform_first() -> None:
    root = str(ROOT)
    sys.path[:] = [root, *(p for p in sys.path if p != root)]
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])
    loaded = sys.modules.get("platform")
    if loaded is not None and not hasattr(loaded, "__path__"):
        # Whoever imported the standard module keeps its object; from now on `platform` is the
        # superset, so both its functions and its subpackages resolve.
        del sys.modules["platform"]
    package = importlib.import_module("platform")
    if not hasattr(package, "__path__"):
        raise ImportError(f"rayplatform: {ROOT / 'platform'} is not the platform package")


_platform_first()

__all__ = ["Run", "train", "ROOT"]


def __getattr__(name: str):
    # On first use, so that `rayplatform --version` and `--help` import neither torch nor Ray.
    if name in ("Run", "train"):
        from rayplatform import api

        return getattr(api, name)
    raise AttributeError(f"module 'rayplatform' has no attribute {name!r}")
