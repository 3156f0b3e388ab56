"""Ray's own views of the runs we start: Ray Train's state tracking and metrics, our Grafana
dashboard beside Ray's, and how a person gets into the dashboard.

Used by every command that starts or joins Ray (``python -m platform.run asl``, ``platform.tune``,
``rayplatform.train``): ``/api/train/v2/runs`` and the dashboard's Train tab then list the run, Ray's
generated Train dashboard has its metrics, and ``<session>/metrics/grafana/dashboards/`` holds
``rayplatform_grafana_dashboard.json`` for a Grafana started with Ray's provisioning.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Read by Ray Train's controller, an actor of the cluster's: they go with the job's runtime env.
TRAIN_VIEWS_ENV = {"RAY_TRAIN_ENABLE_STATE_TRACKING": "1", "RAY_TRAIN_METRICS_ENABLED": "1"}
DASHBOARD_JSON = Path(__file__).with_name("grafana.json")
DASHBOARD_FILE = "rayplatform_grafana_dashboard.json"


def enable_train_views() -> dict[str, str]:
    """Ray Train's state tracking and metrics for the runs this process trains, unless the user set
    them otherwise; their values."""
    for key, value in TRAIN_VIEWS_ENV.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in TRAIN_VIEWS_ENV}


def install_dashboard(session_dir: str | None) -> Path | None:
    """Our dashboard beside the ones Ray wrote for this session, where that folder is on this
    machine (a driver on the head node); its path."""
    folder = Path(session_dir) / "metrics" / "grafana" / "dashboards" if session_dir else None
    if folder is None or not folder.is_dir():
        return None
    target = folder / DASHBOARD_FILE
    try:
        if not target.exists():
            shutil.copyfile(DASHBOARD_JSON, target)
    except OSError:  # a convenience for Grafana: never a reason for a run to fail
        return None
    return target


def session_dir() -> str | None:
    """This Ray session's folder, when this process is connected to Ray."""
    import ray

    try:
        return ray._private.worker.global_worker.node.get_session_dir_path()  # noqa: SLF001 - no public getter
    except AttributeError:  # not connected, or a client
        return None


def dashboard_line(url: str | None) -> str:
    """The dashboard's address, and how a person logs in to it."""
    if not url:
        return "Ray dashboard: not running"
    return f"Ray dashboard: {url}" + (f"  ({LOGIN_HINT})" if token_auth() else "")


LOGIN_HINT = "it asks for Ray's token: `ray get-auth-token` prints it; on a cluster, `ray dashboard cluster.yaml` forwards the port"


def token_auth() -> bool:
    """Whether Ray's token authentication is on for this process's cluster."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:
        return False
    return is_token_auth_enabled()
