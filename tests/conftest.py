"""Shared fixtures: one Ray instance per test session, and the synthetic sets' cache. Helpers the
tests import (paths, running a command as a user does) are in helpers.py.

    make test    # that is: .venv/bin/python -m pytest -q
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import REPO, TEST_ENV, free_port


@pytest.fixture(scope="session", autouse=True)
def synthetic_cache(tmp_path_factory) -> Path:
    """Synthetic sets are written fresh for the session, never read from the user's cache."""
    cache = tmp_path_factory.mktemp("rayplatform-cache")
    os.environ["RAYPLATFORM_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Unit tests run torch in this process beside Ray's workers: on 2 cores, two torch threads
    each spin against them (20x slower measured here)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_address(synthetic_cache) -> str:
    """One local Ray (2 CPUs, dashboard on loopback) shared by every integration test."""
    import ray

    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    os.environ.update(TEST_ENV)
    context = ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=free_port())
    yield context.address_info["gcs_address"]
    ray.shutdown()
