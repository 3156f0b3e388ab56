"""A run where Ray users watch it: our figures in Ray's metrics pipeline, scraped by a real
Prometheus started from the config Ray generates, and the run in Ray Train's own views.

    .venv/bin/python -m pytest tests/test_metrics.py

Prometheus is Debian's ``prometheus`` (``.ci/run`` installs it); without it the Prometheus tests
skip, saying so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import free_port, run_command

from platform.tracking import ray_views

RUN = "watched"


def _get(url: str, headers: dict | None = None) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as reply:
        return json.loads(reply.read())


@pytest.fixture(scope="module")
def prometheus(ray_address, tmp_path_factory):
    """Prometheus on loopback, with Ray's generated config for this session, scraping every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian's package prometheus; .ci/run installs it)")
    folder = tmp_path_factory.mktemp("prometheus")
    generated = Path(ray_views.session_dir()) / "metrics" / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(generated.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/-/ready", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(timeout=20)


@pytest.fixture(scope="module")
def watched_run(ray_address, tmp_path_factory) -> Path:
    storage = tmp_path_factory.mktemp("runs")
    result = run_command(
        "run", "asl", "--tier", "smoke", "--set", "epochs=3", "--storage", str(storage), "--name", RUN, address=ray_address
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return storage / "asl" / RUN


def _last(prometheus: str, expr: str) -> list[dict]:
    query = urllib.parse.urlencode({"query": f"last_over_time(({expr})[15m:1s])"})
    return _get(f"{prometheus}/api/v1/query?{query}")["data"]["result"]


def _waited(prometheus: str, expr: str, want, timeout: float = 45) -> list[dict]:
    """The series of ``expr`` once ``want(series)`` holds (Ray reports, Prometheus scrapes)."""
    deadline = time.monotonic() + timeout
    while True:
        found = _last(prometheus, expr)
        if want(found) or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_every_panel_of_the_shipped_dashboard_shows_the_run_and_its_last_epoch(prometheus, watched_run):
    history = pd.read_csv(watched_run / "history.csv")
    manifest = json.loads((watched_run / "manifest.json").read_text())
    last = history.iloc[-1]
    val_acc = _waited(
        prometheus, f'ray_rayplatform_metric{{run="{RUN}",metric="val/acc"}}', lambda s: s and float(s[0]["value"][1]) == last["val/acc"]
    )
    assert val_acc and float(val_acc[0]["value"][1]) == pytest.approx(last["val/acc"]), val_acc
    labels = val_acc[0]["metric"]
    assert (labels["trainable"], labels["tier"], labels.get("trial")) == ("asl", "smoke", None)  # Prometheus drops empty labels
    steps = _waited(prometheus, f'ray_rayplatform_step{{run="{RUN}"}}', lambda s: bool(s))
    assert int(float(steps[0]["value"][1])) == manifest["training"]["optimizer_steps"]
    best = _last(prometheus, f'ray_rayplatform_best{{run="{RUN}"}}')
    assert float(best[0]["value"][1]) == pytest.approx(history["val/acc"].max()) and best[0]["metric"]["metric"] == "val/acc"

    dashboard = json.loads(ray_views.DASHBOARD_JSON.read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len(panels) >= 8
    for panel in panels:
        for target in panel["targets"]:
            expr = target["expr"].replace("$run", RUN)
            assert _last(prometheus, expr), f"panel {panel['title']!r}: {expr} has no series for the run"


def test_the_dashboard_lists_the_run_in_ray_trains_own_views_and_holds_our_grafana_dashboard(watched_run):
    import ray

    session = Path(ray_views.session_dir())
    assert (session / "metrics" / "grafana" / "dashboards" / ray_views.DASHBOARD_FILE).read_text() == ray_views.DASHBOARD_JSON.read_text()
    url = ray._private.worker.get_dashboard_url()  # noqa: SLF001 - the test's own Ray
    ray_cli = Path(sys.executable).with_name("ray")
    token = subprocess.run([str(ray_cli), "get-auth-token"], capture_output=True, text=True, check=False).stdout.strip()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # Ray Train V2's runs (Ray 2.60 serves V1's at /api/train/v2/runs).
    runs = _get(f"http://{url}/api/train/v2/runs/v1", headers)["train_runs"]
    assert [run["status"] for run in runs if run["name"] == RUN] == ["FINISHED"], json.dumps(runs)[:2000]
