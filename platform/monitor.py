"""Watch runs: status, progress, ETA, metrics (the best beside its trivial baseline), restarts,
checkpoints, CPU/memory and GPUs.

    python -m platform.monitor                       # every run under ./runs
    python -m platform.monitor runs/asl/fast-20261122-023241 --watch
    python -m platform.monitor --address http://127.0.0.1:8265     # a cluster, through its dashboard
    python -m platform.monitor s3://bucket/runs                    # runs stored in an object store

Works from the run directories alone (``manifest.json`` and Ray Train's
``checkpoint_manager_snapshot.json``); a running run's resources come from this machine's
processes, and the GPUs from gpustat with the seeds' warning thresholds. With ``--address`` (the
dashboard's, as for ``ray job submit``) it adds the cluster's nodes, jobs and Ray Train workers from
Ray's state API.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow.fs as pafs

from platform.data.store import filesystem, join
from platform.errors import UserError, exit_on_user_error
from platform.runs import run_files
from platform.tracking.progress import format_seconds, is_headline

# No torch, Ray or trainable here: a person waits for this command (platform/runs/run_files.py).
from platform.train import checkpoints as checkpoint_lib

GPU_HOT_C = 85
GPU_MEMORY_FULL = 0.95
GPU_IDLE_S = 300
# Two readings of one process's start time differ by less (the boot time they count from is rounded).
SAME_START_S = 1.0


def find_runs(root: str) -> list[str]:
    """Run directories at ``root`` or below it (``<storage>``, ``<storage>/<stem>`` or a run), in a
    folder or an object store (``s3://bucket/runs``): two levels of listings, never a walk through
    the checkpoints."""
    fs, path = filesystem(root)
    if _is_file(fs, join(path, run_files.MANIFEST_FILE)):
        return [root]
    found = []
    for first in _folders(fs, path):
        for folder in (first, *_folders(fs, first)):
            if "sweeps" not in folder.split("/") and _is_file(fs, join(folder, run_files.MANIFEST_FILE)):
                found.append(root.rstrip("/") + folder.removeprefix(path.rstrip("/")))
    return sorted(found)


def _exists(where: str) -> bool:
    fs, path = filesystem(where)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as err:  # no such bucket, no credentials, endpoint down
        raise UserError(f"{where}: {str(err).splitlines()[0]}") from None


def _folders(fs: pafs.FileSystem, path: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return [info.path for info in infos if info.type == pafs.FileType.Directory and not info.base_name.startswith(("epoch_", "."))]


def _is_file(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.File


def read_manifest(run: str) -> dict:
    fs, path = filesystem(run)
    with fs.open_input_stream(join(path, run_files.MANIFEST_FILE)) as stream:
        return json.loads(stream.read().decode("utf-8"))


def _driver_alive(manifest: dict) -> bool:
    """Whether the process that started the run still runs here: the manifest's pid, started when the
    manifest says (a pid is reused once its process ends). Any process counts, whatever its command
    line (``rayplatform run``, a notebook); a manifest from before the start time was recorded is
    matched by ``platform.run`` in the command line, as it was then."""
    pid = manifest.get("pid")
    if not pid or manifest.get("hardware", {}).get("host") != os.uname().nodename:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # ended, not yet reaped by its parent
            return False
        if "pid_started" in manifest:
            return abs(process.create_time() - manifest["pid_started"]) < SAME_START_S
        return "platform.run" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def status_of(manifest: dict) -> str:
    if manifest.get("status") == "running" and not _driver_alive(manifest):
        return "interrupted"
    return manifest.get("status", "unknown")


def checkpoints(run_dir: str) -> tuple[dict | None, list[dict]]:
    """The latest finished epoch's metrics and the kept checkpoints (newest first), from Ray Train's
    snapshot. A checkpoint taken inside an epoch (``partial``) carries no metrics of its own: the
    epoch before it does."""
    kept = checkpoint_lib.recorded(checkpoint_lib.read_snapshot(run_dir))
    return next((row for row in kept if not row.get("partial")), None), kept


def metric_of(manifest: dict) -> tuple[str, str]:
    """The run's METRIC and its mode, as its manifest records them from the start; a run from before
    that is asked of its trainable (which imports it, and torch)."""
    if "name" in manifest.get("metric", {}):
        return manifest["metric"]["name"], manifest["metric"]["mode"]
    from platform import registry

    return registry.load(manifest["stem"]).METRIC


def describe_run(run_dir: str | Path) -> dict[str, Any]:
    """One run (a folder or a URI) as the monitor shows it."""
    run_dir = str(run_dir)
    manifest = read_manifest(run_dir)
    metric, mode = metric_of(manifest)
    latest, kept = checkpoints(run_dir)
    epochs_max = manifest.get("config", {}).get("epochs", 0)
    epoch = int(latest["epoch"]) if latest else 0
    scores = [row[metric] for row in kept if metric in row and not row.get("partial")]
    best = (max if mode == "max" else min)(scores) if scores else None
    status = status_of(manifest)
    eta = (epochs_max - epoch) * latest["epoch_s"] if latest and status == "running" else None
    return {
        "run": run_dir,
        "stem": manifest["stem"],
        "tier": manifest.get("tier"),
        "status": status,
        "epoch": epoch,
        "epochs": epochs_max,
        "eta": format_seconds(eta) if eta is not None else "-",
        "metric": metric,
        "best": best,
        "baseline": run_files.baseline_value(manifest.get("baseline"), metric),
        "latest": {k: v for k, v in (latest or {}).items() if is_headline(k)},
        "restarts": int(latest.get("restarts", 0)) if latest else 0,
        "checkpoints": f"{len(kept)} kept, latest {kept[0]['dir']}" if kept else "none yet",
        "dashboard": manifest.get("dashboard"),
        "local": (manifest.get("launch") or {}).get("workers") == 0,  # trains in its driver's process
    }


def format_run(info: dict[str, Any]) -> str:
    best = f"{info['best']:.4f}" if info["best"] is not None else "-"
    if info.get("baseline") is not None:
        best += f" (baseline {info['baseline']:.4f})"
    latest = "  ".join(f"{k} {v:.4f}" for k, v in info["latest"].items())
    lines = [
        f"{info['stem']}/{posixpath.basename(info['run'])}  [{info['status']}]  tier {info['tier']}  "
        f"epoch {info['epoch']}/{info['epochs']}  ETA {info['eta']}  best {info['metric']} {best}  "
        f"restarts {info['restarts']}" + ("  local mode (--workers 0)" if info.get("local") else ""),
        f"    latest: {latest or '-'}",
        f"    checkpoints: {info['checkpoints']}",
    ]
    if info["status"] == "interrupted":
        run = (info["run"] if "://" in info["run"] else os.path.abspath(info["run"])).rstrip("/")
        storage = posixpath.dirname(posixpath.dirname(run))  # a run is <storage>/<stem>/<name>
        lines.append(
            f"    the driver is gone: python -m platform.run {info['stem']} --storage {storage} --name {posixpath.basename(run)} --resume"
        )
    if info["dashboard"] and info["status"] == "running":
        lines.append(f"    dashboard: {info['dashboard']}")
    return "\n".join(lines)


def machine_usage() -> str:
    """This machine, and the Ray Train workers on it (their processes are named by Ray)."""
    workers = [p for p in psutil.process_iter(["name", "cmdline"]) if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])]
    worker_rss = sum(p.memory_info().rss for p in workers if p.is_running()) / 2**30
    memory = psutil.virtual_memory()
    return (
        f"machine: CPU {psutil.cpu_percent(interval=0.2):.0f}% of {psutil.cpu_count()}  "
        f"memory {memory.percent:.0f}% of {memory.total / 2**30:.1f} GiB  "
        f"training workers here: {len(workers)} ({worker_rss:.2f} GiB)"
    )


class GpuWatch:
    """GPU lines from gpustat, with the seeds' warnings; remembers when each GPU was last busy."""

    def __init__(self):
        self.last_busy: dict[int, float] = {}

    def lines(self) -> list[str]:
        try:
            import gpustat

            gpus = gpustat.new_query().gpus
        except Exception as err:  # noqa: BLE001 - no NVIDIA driver is the normal case on a laptop
            return [f"GPUs: none found ({type(err).__name__})"]
        if not gpus:
            return ["GPUs: none found"]
        now = time.monotonic()
        return [self._line(gpu, now) for gpu in gpus]

    def _line(self, gpu: Any, now: float) -> str:
        used, total = gpu.memory_used or 0, gpu.memory_total or 1
        utilisation, temperature = gpu.utilization or 0, gpu.temperature or 0
        if utilisation > 0 or gpu.index not in self.last_busy:
            self.last_busy[gpu.index] = now
        warnings = []
        if temperature > GPU_HOT_C:
            warnings.append(f"temperature over {GPU_HOT_C} C")
        if used / total > GPU_MEMORY_FULL:
            warnings.append(f"memory over {GPU_MEMORY_FULL:.0%}")
        if now - self.last_busy[gpu.index] >= GPU_IDLE_S:
            warnings.append(f"idle for {format_seconds(now - self.last_busy[gpu.index])}")
        return f"GPU {gpu.index} {gpu.name}: {utilisation}%  {temperature} C  {used}/{total} MiB" + (
            f"  WARNING: {', '.join(warnings)}" if warnings else ""
        )


def cluster_lines(address: str) -> list[str]:
    """Nodes, jobs and Ray Train workers of a running cluster, from its state API."""
    from ray.util.state import list_actors, list_jobs, list_nodes

    url = address if address.startswith("http") else f"http://{address}"
    try:
        nodes = list_nodes(address=url, raise_on_missing_output=False)
        actors = list_actors(address=url, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
        jobs = list_jobs(address=url, raise_on_missing_output=False)
    except Exception as err:  # noqa: BLE001 - any failure to reach it is the same for the user
        raise UserError(f"--address {url}: no Ray dashboard answers there ({str(err).splitlines()[0][:200]})") from None
    lines = [f"cluster {url}  (the Ray dashboard; Train runs under its Train tab)"]
    for node in nodes:
        workers = [a for a in actors if a.class_name == "RayTrainWorker" and a.node_id == node.node_id]
        resources = node.resources_total or {}
        lines.append(
            f"  node {node.node_ip} {'head' if node.is_head_node else 'worker'} [{node.state}]  "
            f"CPU {resources.get('CPU', 0):g}  GPU {resources.get('GPU', 0):g}  "
            f"memory {resources.get('memory', 0) / 2**30:.1f} GiB  training workers {len(workers)}"
            + (f" (pids {', '.join(str(w.pid) for w in workers)})" if workers else "")
        )
    runs = sum(a.class_name == "TrainController" for a in actors)
    lines.append(f"  Ray Train runs in progress: {runs}")
    for job in jobs:
        if str(job.status).endswith("RUNNING") or job.submission_id:
            lines.append(f"  job {job.submission_id or job.job_id} [{str(job.status).rsplit('.', 1)[-1]}]  {job.entrypoint}")
    return lines


def _shown_run(run_dir: str) -> str:
    """A run's block; a run whose files a crash left unreadable is listed as broken, not fatal."""
    try:
        return format_run(describe_run(run_dir))
    except (OSError, ValueError, KeyError, TypeError, UserError) as err:
        named = "/".join(run_dir.rstrip("/").split("/")[-2:])
        return f"{named}  [broken]  {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def report(root: str | Path | None, gpus: GpuWatch, address: str | None = None) -> str:
    blocks = []
    if root is not None:
        runs = find_runs(str(root))
        if not runs and address is None:
            raise UserError(f"no runs under {root} (a run directory holds {run_files.MANIFEST_FILE})")
        blocks = [_shown_run(run) for run in runs]
    if address:
        blocks.append("\n".join(cluster_lines(address)))
    return "\n".join([*blocks, "", machine_usage(), *gpus.lines()])


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m platform.monitor", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "path", nargs="?", default="runs", help="a run directory or a folder of runs, or their URI (s3://bucket/runs; default ./runs)"
    )
    parser.add_argument("--watch", action="store_true", help="refresh until interrupted")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes (default 5)")
    parser.add_argument(
        "--address", default=None, help="a Ray dashboard address (http://HOST:8265) to add the cluster's nodes, jobs and workers"
    )
    args = parser.parse_args(argv)
    root: str | None = args.path
    if not _exists(root):
        if args.address is None or args.path != "runs":
            raise UserError(f"{root} does not exist")
        root = None  # only the cluster: its runs are in the cluster's storage
    gpus = GpuWatch()
    if not args.watch:
        print(report(root, gpus, args.address))
        return 0
    try:
        while True:
            shown = report(root, gpus, args.address)
            print(f"\033[2J\033[H{time.strftime('%H:%M:%S')}  (Ctrl-C stops)\n{shown}", flush=True)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
