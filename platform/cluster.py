"""Connecting to Ray: a local instance on a laptop, or the cluster a job was submitted to.

Used by ``python -m platform.run asl`` and, on a cluster,
``ray job submit --working-dir . -- python -m platform.run asl``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import psutil
import ray
import ray.data

from platform import registry
from platform.errors import UserError
from platform.registry import REPO_ROOT
from platform.tracking import console, ray_views

DASHBOARD_HOST = "127.0.0.1"
# Ray Data redraws progress bars and logs each execution in every worker each epoch, which
# buries the one progress line an epoch (its warnings and errors still show).
QUIET_ENV = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_DATA_LOG_LEVEL": "WARNING"}


def _put_repo_first_on_pythonpath() -> None:
    """Workers of a local cluster inherit the driver's environment: the repo must shadow stdlib."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *paths])


def start(address: str | None = None, num_cpus: int | None = None, env: dict[str, str] | None = None, verbose: bool = False) -> str | None:
    """Connect to ``address`` (or ``RAY_ADDRESS``, as under ``ray job submit``) or start Ray here;
    ``env`` reaches every worker of this driver (on a local instance they inherit it anyway).
    Ray's own log lines are held back unless ``verbose`` (``platform/tracking/console.py``).

    Returns the dashboard's URL when there is one.
    """
    # Ray Train reads them in its controller, a process of the cluster's: they travel with the job.
    env = {**ray_views.enable_train_views(), **(env or {})}
    if ray.is_initialized():
        _check_trainables_shipped()
        return _url(ray._private.worker.get_dashboard_url())  # noqa: SLF001 - no public getter
    _put_repo_first_on_pythonpath()
    os.environ.update(QUIET_ENV)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        context = ray.init(
            address=address, log_to_driver=True, runtime_env=_runtime_env(env), logging_level=console.ray_logging_level(verbose)
        )
    else:
        # "local": a new instance here, never one that `ray start` left running on this machine.
        context = ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host=DASHBOARD_HOST,
            log_to_driver=True,
            logging_level=console.ray_logging_level(verbose),
            runtime_env=_trainables_env() or None,
        )
        # Helpers Ray Train starts in their own processes must find this instance, not another.
        os.environ["RAY_ADDRESS"] = context.address_info["gcs_address"]
    console.filter_forwarded_output(verbose)
    ray_views.install_dashboard(ray_views.session_dir())
    return _url(getattr(context, "dashboard_url", None))


def _runtime_env(env: dict[str, str] | None) -> dict[str, Any] | None:
    """What this driver adds to its workers' environment on a running cluster. Their processes
    start from their node's raylet, not from this one, so they also need the platform's root first
    on PYTHONPATH (before the standard library's ``platform``) wherever nothing else puts it there:
    a node image with the platform installed (``rayplatform run`` in a job without --working-dir)."""
    in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env") or {}
    # A submitted job's runtime env already reaches its workers; Ray merges a driver's into it only
    # where they set different keys.
    env_vars = {} if in_job else dict(env or {})
    # A job's working dir brings the platform only when it is the platform's root (``--working-dir .``
    # in the repository), not a user's folder holding a trainable.
    from_working_dir = bool(job.get("working_dir")) and Path.cwd().resolve() == REPO_ROOT
    if not from_working_dir and "PYTHONPATH" not in (job.get("env_vars") or {}):
        env_vars["PYTHONPATH"] = os.environ["PYTHONPATH"]  # the repo first: _put_repo_first_on_pythonpath
    shipped = _trainables_env()
    if "py_modules" in job:  # Ray merges no two lists of them: the job's must hold the trainable's package
        shipped.pop("py_modules", None)
    runtime_env = {**shipped, "env_vars": {**env_vars, **shipped.get("env_vars", {})}}
    return runtime_env if runtime_env["env_vars"] or shipped else None


def _trainables_env() -> dict[str, Any]:
    """The runtime env that gives Ray's processes the trainables of the user's this driver found
    (``./mytoy``, ``mypkg.mytoy``, a plugin): their packages, uploaded with the job (``py_modules``),
    so that nothing need be installed on the nodes, and the table that finds them by stem."""
    found = registry.found_outside()
    if not found:
        return {}
    folders = sorted({str(source.shipped) for source in found})
    return {"py_modules": folders, "env_vars": {registry.JOB_ENV: registry.job_table(found)}}


def _check_trainables_shipped() -> None:
    """Ray already runs in this process (a notebook's second ``rayplatform.train``, a sweep's
    trial): its job's processes know only the trainables found before it started."""
    runtime_env = ray.get_runtime_context().runtime_env or {}
    known = json.loads((runtime_env.get("env_vars") or {}).get(registry.JOB_ENV) or "{}")
    late = [source.stem for source in registry.found_outside() if source.stem not in known]
    if late:
        raise UserError(
            f"trainable {late[0]} was named after Ray started in this process, so Ray's workers cannot import it: "
            "name it first, in a new process (or after ray.shutdown())"
        )


def _url(address: str | None) -> str | None:
    if not address:
        return None
    return address if address.startswith("http") else f"http://{address}"


def cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 1))


def default_cpus_per_worker(workers: int) -> int:
    """The cluster's CPUs shared among the workers, but no more than one node has: a worker
    never spans nodes, and asking for more would wait forever for a place."""
    largest_node = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
    return int(max(1, min(cluster_cpus() // workers, largest_node)))


def cluster_gpus() -> int:
    return int(ray.cluster_resources().get("GPU", 0))


def hardware() -> dict[str, Any]:
    """The machine and cluster a run used, for its manifest."""
    import torch

    import platform as stdlib_platform  # this package, a superset of the standard module

    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "system": f"{stdlib_platform.system()} {stdlib_platform.release()} {stdlib_platform.machine()}",
        "python": stdlib_platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "cpu_count": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    if ray.is_initialized():
        info["cluster_resources"] = {k: v for k, v in ray.cluster_resources().items() if "node:" not in k}
        info["nodes"] = len([n for n in ray.nodes() if n.get("Alive")])
    return info
