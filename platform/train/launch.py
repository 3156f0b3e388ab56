"""A run assembled from its trainable, its config and its :class:`~platform.launching.Launch`: Ray,
data, the run directory, trackers, Ray Train, and the finished run's files. The one place a run is
put together, for ``python -m platform.run asl`` (``platform/run.py``), ``rayplatform.train`` and
each trial of ``python -m platform.tune asl`` (``platform/tune/trial.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from platform import cluster
from platform import config as config_lib
from platform.contract import Trainable
from platform.data import ingest
from platform.errors import UserError
from platform.launching import Launch
from platform.runs import artifacts, baseline
from platform.runs.storage import RunLocation, forwarded_env
from platform.tracking import progress, ray_views, trackers
from platform.tracking.progress import is_headline
from platform.train import checkpoints, local, preempt, trainer


@dataclasses.dataclass(frozen=True)
class Extras:
    """What a caller adds to a run: fields of its manifest (a sweep trial's origin), Ray Train
    callbacks made once the config and data are known (a trial's report to Tune), and whether rank
    0 prints a line an epoch (a sweep shows its trial table instead)."""

    manifest: dict = dataclasses.field(default_factory=dict)
    callbacks: Callable[[Any, dict], list] | None = None
    epoch_lines: bool = True


def connect(launch: Launch, say: Callable[[str], None] = print) -> str | None:
    """Ray, and the launch checked against it (GPUs, CPUs); the dashboard's URL."""
    dashboard = cluster.start(launch.address, env=forwarded_env(), verbose=launch.verbose)
    say(ray_views.dashboard_line(dashboard))
    check_resources(launch)
    return dashboard


def check_resources(launch: Launch) -> None:
    if launch.gpu and cluster.cluster_gpus() < launch.world_size:
        raise UserError(f"--gpu asks for {launch.world_size} GPU(s); the Ray cluster has {cluster.cluster_gpus()}")
    if launch.workers * (launch.cpus_per_worker or 1) > cluster.cluster_cpus():
        raise UserError(
            f"--workers {launch.workers} needs {launch.workers * (launch.cpus_per_worker or 1):g} CPUs; "
            f"the Ray cluster has {cluster.cluster_cpus()}"
        )


def train(
    trainable: Trainable,
    cfg: Any,
    tier: str,
    launch: Launch,
    location: RunLocation,
    *,
    tracked: trackers.Tracking,
    dashboard: str | None,
    extras: Extras = Extras(),
    say: Callable[[str], None] = print,
) -> dict:
    """Train the run at ``location`` (Ray connected, the folder claimed, or a run to resume); its
    finished manifest. A failure marks the run failed and is raised."""
    run_dir, stem = location.local, trainable.stem
    say(f"[{stem}] preparing data ({cfg.data_dir or 'synthetic set'})")
    # The data a resumed run started with; none when it lost its meta.json before its first checkpoint.
    pinned = artifacts.read_json(run_dir / artifacts.META_FILE) if launch.resume and (run_dir / artifacts.META_FILE).exists() else None
    splits, meta = ingest.prepare(trainable, cfg, launch.store_root(), say=say, pinned=pinned, bars=progress.wanted(launch.progress))
    say(f"[{stem}] rows: {meta['rows']}  in {meta['preprocess_s']}s")
    if not launch.resume:  # a tier's min_steps on this data; a resumed run keeps what it saved
        cfg, grown = config_lib.fit_to_data(cfg, meta["rows"]["train"], launch.workers)
        if grown:
            say(f"[{stem}] {grown}")
    trainable.build_model(cfg, meta)  # a shape error (dim vs heads...) is reported here, not in a worker
    launch = dataclasses.replace(launch, cpus_per_worker=launch.cpus_per_worker or cluster.default_cpus_per_worker(launch.world_size))
    manifest = artifacts.start(
        run_dir,
        trainable,
        tier=tier,
        cfg=cfg,
        meta=meta,
        hardware=cluster.hardware(),
        resumed=launch.resume,
        dashboard=dashboard,
        launch=launch.recorded(),
    )
    if extras.manifest:
        manifest.update(extras.manifest)
        artifacts.write_json(run_dir / artifacts.MANIFEST_FILE, manifest)
    tracked.open(
        run_dir / artifacts.MANIFEST_FILE,
        manifest,
        run_dir.name,
        trackers.run_params(stem, tier, manifest["config"]),
        trackers.run_tags(stem, tier, run_dir.name, location.remote or run_dir),
    )
    location.push()
    say(f"[{stem}] run directory: {location.remote or run_dir}")
    if launch.is_local:
        say(f"[{stem}] {local.NOTICE}")
    # Local mode's loop is this process's: its own SIGTERM asks it, with no actor between them.
    notice = None if launch.is_local else preempt.Notice.remote()
    # A signal handler is the main thread's: a sweep's trial runs in a thread of Tune's actor.
    watched = threading.current_thread() is threading.main_thread()
    on_notice = lambda saved: (_preempted(stem, launch, location, manifest, saved, say), tracked.end("KILLED"))  # noqa: E731
    install = preempt.install_local_handler if launch.is_local else functools.partial(preempt.install_driver_handler, notice)
    replaced = install(on_notice) if watched else None
    try:
        # Before training, so the monitor shows it; a resume keeps the first attempt's (fitting may be costly).
        manifest["baseline"] = baseline.of_run(trainable, cfg, splits, meta, manifest.get("baseline"))
        artifacts.write_json(run_dir / artifacts.MANIFEST_FILE, manifest)
        say(baseline.describe(stem, manifest["baseline"], trainable.METRIC[0]))
        callbacks = tracked.callbacks(run_dir) + (extras.callbacks(cfg, meta) if extras.callbacks else [])
        result = trainer.build(
            trainable,
            cfg,
            meta,
            splits,
            location,
            launch,
            notice=notice,
            show_progress=progress.wanted(launch.progress),
            epoch_lines=extras.epoch_lines,
            callbacks=callbacks,
            run_info={"tier": tier, "launch": launch.recorded(), "started": manifest["started"]},
        ).fit()
        manifest = artifacts.finish(
            run_dir, trainable, cfg=cfg, meta=meta, result=result, val_split=splits["val"], manifest=manifest, test_split=splits.get("test")
        )
        checkpoints.remove_orphans(location.run_uri)
        tracked.finish(run_dir, manifest["history"])
    except BaseException as exc:
        artifacts.fail(run_dir, manifest, f"{type(exc).__name__}: {exc}".splitlines()[0])
        location.push()
        tracked.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        preempt.uninstall_driver_handler(notice, replaced)
    location.push()
    return manifest


def _preempted(stem: str, launch: Launch, location: RunLocation, manifest: dict, saved: str | None, say) -> None:
    """The driver was told to stop (SIGTERM): the run is interrupted, resumable from ``saved``."""
    artifacts.write_json(
        location.local / artifacts.MANIFEST_FILE, {**manifest, "status": "interrupted", "updated": artifacts.now(), "preempted_at": saved}
    )
    location.push()
    where = f"checkpoint {saved}" if saved else "no new checkpoint (the workers did not answer in time)"
    say(
        f"[{stem}] preempted: {where}; continue with: python -m platform.run {stem} "
        f"--storage {launch.storage} --name {location.name} --resume{' --workers 0' if launch.is_local else ''}"
    )


def run_trackers(launch: Launch, stem: str, run_dir) -> trackers.Tracking:
    """``--tracker``, checked before Ray starts; a resumed run keeps its trackers and MLflow run."""
    saved = artifacts.read_json(run_dir / artifacts.MANIFEST_FILE) if launch.resume else None
    chosen = launch.tracker or trackers.saved_trackers(saved) or trackers.DEFAULT
    return trackers.Tracking.check(chosen, launch.storage, stem, saved)


def report_finished(trainable: Trainable, location: RunLocation, manifest: dict, storage: str) -> None:
    """What a command prints of a finished run: its summary, then on stderr a trainable's own checks
    (captions that collapsed to one for every image) and a best metric short of the baseline."""
    print(summary(location, manifest, storage), flush=True)
    for warning in trainable.run_warnings(manifest):
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    baseline.warn(trainable.stem, manifest.get("baseline"), *trainable.METRIC, manifest["metric"]["best"])


def summary(location: RunLocation, manifest: dict, storage_arg: str) -> str:
    metric, training = manifest["metric"], manifest["training"]
    # As the user named the storage: a job's working directory may be gone by now.
    shown = location.local if location.remote else Path(storage_arg) / manifest["stem"] / location.name
    lines = [
        f"[{manifest['stem']}] finished: {training['epochs_completed']} epochs, best {metric['name']} "
        f"{metric['best']:.4f}{baseline.shown(manifest.get('baseline'), metric['name'])} at epoch "
        f"{training['best_epoch']}, restarts {training['restarts']}",
        f"  parameters: {manifest['model']['parameters']:,}   prediction: {manifest['inference'].get('ms_median')} ms (CPU, batch 1)",
        f"  run directory: {location.remote or location.local}",
        f"  predict: python -m platform.predict {shown} <input ...>",
    ]
    if "test_metrics" in manifest:
        shown = {k: v for k, v in manifest["test_metrics"].items() if is_headline(k)}
        test_metric = metric["name"].replace("val/", "test/", 1)
        lines.insert(
            1,
            "  test split: "
            + "  ".join(
                f"{k} {v:.4f}" + (baseline.shown(manifest.get("baseline"), metric["name"], "test") if k == test_metric else "")
                for k, v in shown.items()
            ),
        )
    return "\n".join(lines)
