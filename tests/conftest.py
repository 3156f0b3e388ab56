"""Shared fixtures: one Ray instance per test session, the synthetic sets' cache, and an S3 server
on loopback (moto) with the environment that points at it. Helpers the tests import (paths,
running a command as a user does) are in helpers.py.

    make test    # that is: .venv/bin/python -m pytest -q
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, S3_BUCKET, TEST_ENV, free_port


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


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """``python -m moto.server`` on a free loopback port, with an empty bucket ``helpers.S3_BUCKET``."""
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=TEST_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=TEST_ENV["AWS_DEFAULT_REGION"],
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket=S3_BUCKET)
            break
        except Exception:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.3)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch, tmp_path):
    """This process (and the commands it starts) pointed at the loopback S3 server, with dummy credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    return s3_endpoint
