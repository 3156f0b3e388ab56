"""MLflow tracking of a run or a sweep: params, per-epoch metrics, tags and the run's files.

    MLFLOW_TRACKING_URI=http://mlflow:5000 python -m platform.run asl --tracker mlflow
    python -m platform.tune asl --tracker mlflow      # a parent run, one child run a trial

Without ``MLFLOW_TRACKING_URI`` the store is local, beside the runs: ``<storage>/mlflow.db``
(SQLite) with the files under ``<storage>/mlartifacts/``; browse it with
``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``. The experiment is the trainable's stem
(or ``MLFLOW_EXPERIMENT_NAME``). Credentials (``MLFLOW_TRACKING_TOKEN``, user and password) stay
in the environment, where MLflow's client reads them; the URI written to a manifest has no
user-info part.

Epoch metrics are logged by :class:`MlflowCallback` in Ray Train's controller from rank 0's report
(the row ``history.csv`` gets), ``step`` = epoch. MLflow keeps every point it is sent, so an epoch
replayed after a restart or a ``--resume`` is not sent again: the run's last logged ``epoch`` is
read back when a driver opens it. Needs the client only: ``pip install 'rayplatform[mlflow]'``.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import numbers
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import ray.train

from platform.errors import UserError, redacted

URI_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
LOCAL_DB = "mlflow.db"
LOCAL_ARTIFACTS = "mlartifacts"
REACH_TIMEOUT_S = 5.0
PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_CHARS = 6000  # MLflow's limit of a param value
BATCH = 100  # params or tags in one log_batch call (MLflow's limit)


@dataclasses.dataclass(frozen=True)
class Target:
    """Where runs go: the tracking URI, the experiment, and for a local store its artifact root."""

    uri: str
    experiment: str
    artifact_root: str | None = None

    @property
    def shown_uri(self) -> str:
        return public_uri(self.uri)


def check_installed() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UserError(
            "--tracker mlflow needs MLflow's client: pip install 'rayplatform[mlflow]' (or pip install mlflow-skinny)"
        ) from None


def target(storage: str, stem: str) -> Target:
    """``MLFLOW_TRACKING_URI``, else a SQLite store under a folder ``--storage`` (object-store
    storage has no file to hold a database: it needs a tracking server)."""
    experiment = os.environ.get(EXPERIMENT_ENV) or stem
    uri = os.environ.get(URI_ENV, "").strip()
    if uri:
        return Target(uri, experiment)
    if "://" in storage:
        raise UserError(
            f"--tracker mlflow with --storage {storage}: set {URI_ENV} to a tracking server "
            "(the local store is a file beside a storage folder)"
        )
    root = Path(storage).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return Target(f"sqlite:///{root / LOCAL_DB}", experiment, str(root / LOCAL_ARTIFACTS))


def check_reachable(uri: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """A tracking server must answer before training starts; any HTTP reply counts (an auth error
    shows on the first call, with MLflow's own message). A ``user:password@`` in the URI is sent as
    basic auth, as MLflow's client sends it."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    request = urllib.request.Request(f"{public_uri(uri).rstrip('/')}/health")
    if parts.username is not None:
        pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii"))
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"MLflow tracking server {public_uri(uri)} is unreachable ({reason}): start it or fix {URI_ENV}") from None


def public_uri(uri: str) -> str:
    """The URI without a ``user:password@`` part, safe to print and to write."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.netloc or "@" not in parts.netloc:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def credentialed(uri: str) -> str:
    """The URI to connect to the tracking store ``uri`` names (a public URI): this process's
    ``MLFLOW_TRACKING_URI`` when it names the same store, with the credentials it holds."""
    own = os.environ.get(URI_ENV, "").strip()
    return own if own and public_uri(own) == public_uri(uri) else uri


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(tracking: Target) -> str:
    mlflow_client = client(tracking.uri)
    found = mlflow_client.get_experiment_by_name(tracking.experiment)
    if found is not None:
        return found.experiment_id
    location = f"{tracking.artifact_root}/{tracking.experiment}" if tracking.artifact_root else None
    return mlflow_client.create_experiment(tracking.experiment, artifact_location=location)


def check_run(tracking: Target, run_id: str) -> None:
    """A resumed run continues its MLflow run, which must be on this tracking server."""
    from mlflow.exceptions import MlflowException

    try:
        client(tracking.uri).get_run(run_id)
    except MlflowException:
        raise UserError(
            f"MLflow run {run_id} of this run is not on {tracking.shown_uri}: set {URI_ENV} to the tracking server it started on"
        ) from None


def start_run(tracking: Target, name: str, params: dict, tags: dict, parent_id: str | None = None) -> str:
    """A new run with its params and tags; a child of ``parent_id`` when given."""
    mlflow_client = client(tracking.uri)
    all_tags = {**tags, **({PARENT_TAG: parent_id} if parent_id else {})}
    run = mlflow_client.create_run(experiment_id(tracking), run_name=name, tags=_strings(all_tags))
    log_params(tracking, run.info.run_id, params)
    return run.info.run_id


def reopen_run(tracking: Target, run_id: str, tags: dict) -> None:
    mlflow_client = client(tracking.uri)
    mlflow_client.update_run(run_id, status="RUNNING")
    _log(mlflow_client, run_id, tags=tags)


def log_params(tracking: Target, run_id: str, params: dict) -> None:
    _log(client(tracking.uri), run_id, params=params)


def _log(mlflow_client, run_id: str, params: dict | None = None, tags: dict | None = None) -> None:
    from mlflow.entities import Param, RunTag

    param_list = [Param(key, value) for key, value in _strings(params or {}).items()]
    tag_list = [RunTag(key, value) for key, value in _strings(tags or {}).items()]
    for start in range(0, max(len(param_list), len(tag_list)), BATCH):
        mlflow_client.log_batch(run_id, params=param_list[start : start + BATCH], tags=tag_list[start : start + BATCH])


def _strings(values: dict) -> dict[str, str]:
    """MLflow's params and tags are strings: lists and dicts as JSON, cut to MLflow's limit."""
    shown = {}
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
        shown[metric_key(str(key))] = text[:MAX_PARAM_CHARS]
    return shown


def metric_key(key: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . / :`` and spaces; anything else becomes ``_``."""
    return re.sub(r"[^\w\-./: ]", "_", key)


def log_epoch(mlflow_client, run_id: str, row: dict) -> None:
    """One epoch's numbers, step = epoch, in one call (all of an epoch's points or none)."""
    from mlflow.entities import Metric

    epoch, stamp = int(row["epoch"]), int(time.time() * 1000)
    points = [Metric(metric_key(key), float(value), stamp, epoch) for key, value in row.items() if isinstance(value, numbers.Real)]
    for start in range(0, len(points), 1000):  # MLflow's limit of metrics a batch
        mlflow_client.log_batch(run_id, metrics=points[start : start + 1000])


def logged_epochs(tracking: Target, run_id: str) -> set[int]:
    """The epochs the run holds (the steps of its ``epoch`` metric, logged with every epoch's batch)."""
    return {point.step for point in client(tracking.uri).get_metric_history(run_id, "epoch")}


def log_missing_epochs(tracking: Target, run_id: str, history: list[dict]) -> int:
    """Epochs of the finished history that the run lacks (a report that raced the controller's
    shutdown, an outage); returns how many were sent."""
    logged = logged_epochs(tracking, run_id)
    missing = [row for row in history if int(row["epoch"]) not in logged]
    mlflow_client = client(tracking.uri)
    for row in missing:
        log_epoch(mlflow_client, run_id, row)
    return len(missing)


def log_files(tracking: Target, run_id: str, files: list[Path], folder: str | None = None) -> None:
    mlflow_client = client(tracking.uri)
    for path in files:
        if path.is_file():
            mlflow_client.log_artifact(run_id, str(path), artifact_path=folder)


def end_run(tracking: Target, run_id: str, status: str) -> None:
    client(tracking.uri).set_terminated(run_id, status=status)


def end_running_children(tracking: Target, parent_id: str, status: str = "KILLED") -> None:
    """Trials that Tune stopped (ASHA, the time budget) never reach their own end."""
    mlflow_client = client(tracking.uri)
    parent = mlflow_client.get_run(parent_id)
    children = mlflow_client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'")
    for child in children:
        if child.info.status == "RUNNING":
            mlflow_client.set_terminated(child.info.run_id, status=status)


class MlflowCallback(ray.train.UserCallback):
    """Runs in Ray Train's controller: rank 0's epoch metrics to the run, each epoch once.

    Ray pickles it into the controller, so it holds the tracking URI without credentials; the
    controller takes them from its own environment (:func:`credentialed`), which a local Ray's
    processes inherit from the driver: on a cluster, set ``MLFLOW_TRACKING_URI`` (or MLflow's
    ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN``) where ``ray start`` runs, never in a
    runtime_env (as the labeler's API key: platform/label/secret.py)."""

    def __init__(self, tracking: Target, run_id: str, logged_through: int):
        self.tracking = dataclasses.replace(tracking, uri=public_uri(tracking.uri))
        self.run_id, self.logged_through = run_id, logged_through
        self._client = None

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        row = metrics[0]
        # A checkpoint inside an epoch carries no epoch metrics; a replayed epoch is logged already.
        if row.get("partial") or int(row["epoch"]) <= self.logged_through:
            return
        try:
            if self._client is None:
                self._client = client(credentialed(self.tracking.uri))
            log_epoch(self._client, self.run_id, row)
        except Exception as err:  # noqa: BLE001 - a tracking outage must not stop training
            # The epoch is sent again from history.csv when the run finishes (platform/tracking/trackers.py).
            print(f"warning: MLflow did not take epoch {row['epoch']}: {redacted(str(err).splitlines()[0])}", flush=True)
            return
        self.logged_through = int(row["epoch"])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    def __setstate__(self, state: dict) -> None:
        """In the controller: import MLflow's client (seconds) while the workers start, not in the
        first epoch's report."""
        self.__dict__.update(state)
        threading.Thread(target=importlib.import_module, args=("mlflow",), daemon=True).start()
