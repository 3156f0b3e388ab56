"""``--tracker mlflow`` against a real ``mlflow server`` on loopback that these tests start.

    make test    # that is: .venv/bin/python -m pytest -q (tests/test_mlflow.py runs here too)

The server comes from ``.venv-mlflow`` (``make setup`` makes it: the full ``mlflow`` package pins
an older pyarrow than Ray Data's, so it lives apart from the project's venv, which has only the
client, ``mlflow-skinny``). Outside CI a missing server venv skips these tests with that reason.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, TEST_ENV, free_port, last_line
from ray import cloudpickle

from platform.errors import UserError
from platform.tracking import mlflow_tracker, trackers

SERVER = REPO / ".venv-mlflow" / "bin" / "mlflow"
SMOKE = ["asl", "--tier", "smoke", "--set", "epochs=6"]
TOKEN = "test-token-never-written"
USER, PASSWORD = "tracker", "pa/ss:w@rd-never-shown"  # percent-encoded in a URI
SECRET_FORMS = (PASSWORD, urllib.parse.quote(PASSWORD, safe=""))
RUN_FILES = {"manifest.json", "config.json", "history.csv", "best_model.pt", "plots/training_curves.png"}


def _no_mlflow_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    """A real tracking server: SQLite backend and an artifact root in a temporary folder."""
    if not SERVER.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SERVER} is missing: make setup creates it")
        pytest.skip(f"no MLflow server: {SERVER} is absent (make setup creates it)")
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed at teardown
    server = subprocess.Popen(
        [
            str(SERVER),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
        ],
        cwd=folder,
        env=_no_mlflow_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # a loaded 2-core machine takes a minute or more
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield uri
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="module")
def client(mlflow_uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_uri)


def _env(uri: str, address: str) -> dict[str, str]:
    return {**_no_mlflow_env(), **TEST_ENV, "RAY_ADDRESS": address, "MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_TOKEN": TOKEN}


def _command(module: str, *args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"platform.{module}", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def _points(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((point.step, point.value) for point in client.get_metric_history(run_id, key))


def _wait_for_epoch(trace: Path, epoch: int, process: subprocess.Popen, timeout: float = 600) -> None:
    """Until a worker trains a batch of ``epoch`` (its trace, written as it goes: the controller
    logs to MLflow a poll later, which a loaded machine stretches)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for path in trace.glob("*.jsonl"):
            if any(json.loads(line)["epoch"] >= epoch for line in path.read_text().splitlines() if line.strip()):
                return
        time.sleep(0.05)
    raise AssertionError(f"the run ended or stalled before epoch {epoch}: {process.stdout.read()[-3000:]}")


def test_a_run_killed_and_resumed_is_one_mlflow_run_with_one_point_an_epoch(mlflow_uri, client, ray_address, tmp_path):
    storage = tmp_path / "runs"
    # The trackers across a kill and a resume, not Ray Train's workers: local mode (--workers 0) is seconds sooner.
    args = [*SMOKE, "--workers", "0", "--tracker", "mlflow,tensorboard", "--storage", str(storage), "--name", "tracked"]
    trace = tmp_path / "trace"
    trace.mkdir()
    env = _env(mlflow_uri, ray_address)
    driver = subprocess.Popen(
        [sys.executable, "-m", "platform.run", *args],
        cwd=REPO,
        env={**env, "RAYPLATFORM_TRACE_DIR": str(trace)},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    run_dir = storage / "asl" / "tracked"
    _wait_for_epoch(trace, 3, driver)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver dies: its MLflow run is left RUNNING
    driver.wait()
    run_id = json.loads((run_dir / "manifest.json").read_text())["tracking"]["mlflow"]["run_id"]
    logged_before = {step for step, _ in _points(client, run_id, "epoch")}

    resumed = _command("run", "asl", "--workers", "0", "--storage", str(storage), "--name", "tracked", "--resume", env=env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["tracking"]["mlflow"]["run_id"] == run_id  # the same run continued
    assert manifest["tracking"]["trackers"] == ["mlflow", "tensorboard"]  # kept by the resume
    assert (run_dir / "tensorboard").is_dir()
    runs = client.search_runs([client.get_experiment_by_name("asl").experiment_id], filter_string="tags.run_name = 'tracked'")
    assert [r.info.run_id for r in runs] == [run_id]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["stem"] == "asl" and run.data.params["tier"] == "smoke"
    assert run.data.params["epochs"] == "6" and run.data.params["dim"] == str(manifest["config"]["dim"])
    assert {"stem": "asl", "tier": "smoke", "run_name": "tracked"}.items() <= run.data.tags.items()
    assert run.data.tags["ray_job_id"]

    # One point an epoch, step = epoch, the values history.csv has, whatever the resume replayed.
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4, 5, 6] and logged_before <= set(range(1, 7))
    for key in ("val/acc", "train/loss", "lr", "epoch"):
        assert _points(client, run_id, key) == [(int(e), pytest.approx(v)) for e, v in zip(history["epoch"], history[key])]

    assert RUN_FILES <= _artifacts(client, run_id)
    saved = Path(client.download_artifacts(run_id, "manifest.json", str(tmp_path)))
    assert json.loads(saved.read_text())["status"] == "finished"
    # The token reached the client through the environment only.
    written = [p.read_text(errors="ignore") for p in run_dir.rglob("*.json")]
    assert not any(TOKEN in text for text in written)
    assert TOKEN not in json.dumps({**run.data.params, **run.data.tags})


def test_a_sweep_is_a_parent_run_with_a_child_run_a_trial(mlflow_uri, client, ray_address, tmp_path):
    storage = tmp_path / "runs"
    result = _command(
        "tune",
        "asl",
        "--tiers",
        "smoke",
        "--set",
        "epochs=2",
        "--trials",
        "2",
        "--concurrent",
        "2",
        "--tracker",
        "mlflow",
        "--storage",
        str(storage),
        "--name",
        "tracked-sweep",
        env=_env(mlflow_uri, ray_address),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sweep_dir = storage / "asl" / "sweeps" / "tracked-sweep"
    parent_id = json.loads((sweep_dir / "tracking.json").read_text())["tracking"]["mlflow"]["run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["kind"] == "sweep" and parent.data.params["trials"] == "2"
    best = json.loads((sweep_dir / "best.json").read_text())
    assert parent.data.tags["best_trial_id"] == best["trial_id"]
    assert parent.data.metrics["best/val/acc"] == pytest.approx(best["metrics"]["val/acc"])
    assert {"results.csv", "best.json", "sweep.json"} <= _artifacts(client, parent_id)

    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")
    trial_dirs = sorted(p.name for p in (sweep_dir / "trials").iterdir())
    assert sorted(c.data.tags["trial_id"] for c in children) == trial_dirs and len(children) == 2
    for child in children:
        assert child.info.status in ("FINISHED", "KILLED")
        steps = [step for step, _ in _points(client, child.info.run_id, "val/acc")]
        assert steps == list(range(1, len(steps) + 1)) and steps  # an epoch once, in order
        assert "config.json" in _artifacts(client, child.info.run_id)


def test_an_unreachable_tracking_server_is_one_error_line_before_ray_starts(tmp_path):
    port = free_port()  # nothing listens there
    env = {**_no_mlflow_env(), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    for command in ("run", "tune"):
        stem_args = ["asl", "--tier", "smoke"] if command == "run" else ["asl", "--tiers", "smoke", "--trials", "2"]
        result = _command(command, *stem_args, "--tracker", "mlflow", "--storage", str(tmp_path), env=env, timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        assert last_line(result.stderr) == (
            f"error: MLflow tracking server http://127.0.0.1:{port} is unreachable "
            "([Errno 111] Connection refused): start it or fix MLFLOW_TRACKING_URI"
        )
        assert "Ray dashboard" not in result.stdout and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("text", ["wandb", "", "mlflow,nope"])
def test_an_unknown_tracker_is_a_user_error(text):
    with pytest.raises(UserError, match="choose tensorboard, mlflow or both"):
        trackers.parse(text)


def test_missing_mlflow_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what Python does for a package that is not installed
    with pytest.raises(UserError, match=r"pip install 'rayplatform\[mlflow\]'"):
        trackers.Tracking.check("mlflow", "runs", "asl")


@pytest.fixture
def auth_server():
    """A loopback tracking server behind basic auth, as a proxy puts one: it answers ``/health`` and
    MLflow's ``log-batch`` to the right credentials (401 otherwise) and records what it was sent."""
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    seen: list[tuple[str, str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.command, self.path, self.headers.get("Authorization")))
            allowed = self.headers.get("Authorization") == expected
            body = b"{}" if allowed else b'{"error_code": "UNAUTHENTICATED", "message": "log in"}'
            self.send_response(200 if allowed else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", expected, seen
    server.shutdown()
    server.server_close()


def _with_credentials(host: str, scheme: str = "http") -> str:
    return f"{scheme}://{USER}:{urllib.parse.quote(PASSWORD, safe='')}@{host}"


def test_a_tracking_server_behind_basic_auth_is_reached_with_the_uris_credentials(auth_server):
    host, expected, seen = auth_server
    mlflow_tracker.check_reachable(_with_credentials(host))
    assert seen == [("GET", "/health", expected)]


def test_an_unreachable_server_with_credentials_is_one_error_line_without_them():
    port = free_port()  # nothing listens there
    with pytest.raises(UserError) as raised:
        mlflow_tracker.check_reachable(_with_credentials(f"127.0.0.1:{port}"))
    assert str(raised.value) == (
        f"MLflow tracking server http://127.0.0.1:{port} is unreachable ([Errno 111] Connection refused): "
        "start it or fix MLFLOW_TRACKING_URI"
    )


@pytest.mark.parametrize("scheme", ["http", "https", "postgresql"])
def test_the_callback_ray_pickles_into_its_controller_holds_no_credentials(monkeypatch, scheme):
    uri = _with_credentials("tracking.example:5000/mlflow", scheme)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    callback = mlflow_tracker.MlflowCallback(mlflow_tracker.Target(uri, "asl"), "run-1", 0)
    pickled = cloudpickle.dumps(callback)
    assert not any(secret.encode() in pickled for secret in SECRET_FORMS)
    assert f"{scheme}://tracking.example:5000/mlflow".encode() in pickled
    assert mlflow_tracker.credentialed(cloudpickle.loads(pickled).tracking.uri) == uri  # its process's own


def test_the_controller_logs_with_its_own_environments_credentials_and_never_prints_them(auth_server, monkeypatch, capsys):
    host, expected, seen = auth_server
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _with_credentials(host))
    pickled = cloudpickle.dumps(mlflow_tracker.MlflowCallback(mlflow_tracker.Target(_with_credentials(host), "asl"), "run-1", 0))

    cloudpickle.loads(pickled).after_report(None, [{"epoch": 1, "val/acc": 0.5}], None)  # a controller with them
    assert seen == [("POST", "/api/2.0/mlflow/runs/log-batch", expected)] and capsys.readouterr().out == ""

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{host}")  # a controller without them sends none
    cloudpickle.loads(pickled).after_report(None, [{"epoch": 2, "val/acc": 0.6}], None)
    assert seen[-1] == ("POST", "/api/2.0/mlflow/runs/log-batch", None)
    assert capsys.readouterr().out.startswith("warning: MLflow did not take epoch 2: ")

    port = free_port()  # the tracking server is down: MLflow's error names the URL it called
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _with_credentials(f"127.0.0.1:{port}"))
    target = mlflow_tracker.Target(_with_credentials(f"127.0.0.1:{port}"), "asl")
    cloudpickle.loads(cloudpickle.dumps(mlflow_tracker.MlflowCallback(target, "run-1", 0))).after_report(None, [{"epoch": 1}], None)
    driver = trackers.Tracking(("mlflow",), target)
    driver.run_id = "run-1"
    driver.end("FAILED")  # the driver's own warning, while the run's error is on its way out
    shown = capsys.readouterr().out
    assert shown.count(f"http://***@127.0.0.1:{port}/api/2.0/mlflow/runs/") == 2, shown
    assert not any(secret in shown for secret in SECRET_FORMS), shown


def test_credentials_in_a_tracking_uri_are_never_shown():
    assert mlflow_tracker.public_uri("https://user:pw@mlflow.example:5000/path") == "https://mlflow.example:5000/path"
    assert mlflow_tracker.public_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_without_a_uri_the_store_is_local_beside_the_runs_and_replays_are_not_logged_twice(tmp_path, monkeypatch):
    """The default store, and the callback's rule, without Ray: a report of an epoch the run
    holds already (a replay after a restart) adds no point; the finish fills a gap from history."""
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(key)
    tracked = trackers.Tracking.check("mlflow", str(tmp_path / "runs"), "asl")
    assert tracked.target.uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    run_dir = tmp_path / "runs" / "asl" / "local"
    run_dir.mkdir(parents=True)
    manifest: dict = {"status": "running"}
    tracked.open(run_dir / "manifest.json", manifest, "local", {"stem": "asl", "lr": 0.1}, {"stem": "asl"})
    rows = [{"epoch": e, "val/acc": e / 10, "partial": 0} for e in (1, 2, 3)]
    callback = tracked.callbacks(run_dir)[0]
    for row in (rows[0], {**rows[0], "partial": 1}, rows[0], rows[2]):  # a partial report, a replay, a gap
        callback.after_report(None, [row], None)
    for name in ("config.json", "history.csv", "best_model.pt"):
        (run_dir / name).write_text("x")
    tracked.finish(run_dir, rows)
    client = mlflow_tracker.client(tracked.target.uri)
    assert _points(client, tracked.run_id, "val/acc") == [(1, 0.1), (2, 0.2), (3, pytest.approx(0.3))]
    assert json.loads((run_dir / "manifest.json").read_text())["tracking"]["mlflow"]["run_id"] == tracked.run_id
    stored = client.get_run(tracked.run_id).info.artifact_uri
    assert stored.startswith(str(tmp_path / "runs" / "mlartifacts"))
    assert {"manifest.json", "best_model.pt"} <= {a.path for a in client.list_artifacts(tracked.run_id)}
    shutil.rmtree(run_dir)


def test_a_failure_quoting_a_credentialed_url_shows_it_nowhere(tmp_path, capsys):
    """MLflow's client names the URL it called: a run whose tracking server went away fails with it."""
    from platform import errors
    from platform.runs import artifacts

    message = "MlflowException: API request to http://alice:s3cr3t@127.0.0.1:5077/api/2.0/mlflow/metrics/get-history failed"
    artifacts.write_json(tmp_path / artifacts.MANIFEST_FILE, {"status": "running"})
    artifacts.fail(tmp_path, {"status": "running"}, message)

    @errors.exit_on_user_error
    def failing(argv):
        raise RuntimeError(message)

    assert failing([]) == 1
    shown = capsys.readouterr().err
    assert "Traceback" in shown and "http://***@127.0.0.1:5077" in shown
    for written in (shown, (tmp_path / artifacts.MANIFEST_FILE).read_text()):
        assert "s3cr3t" not in written and "alice" not in written
