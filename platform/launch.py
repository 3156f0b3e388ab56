"""What ``python -m platform.run asl`` does once its arguments are checked: Ray, data, the run
directory, Ray Train, and the finished run's files and summary (``platform/run.py`` parses).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from platform import artifacts, baseline, checkpoints, cluster, data, preempt, progress, registry, tracking, trainer
from platform import config as config_lib
from platform.errors import UserError
from platform.progress import is_headline
from platform.storage import RunLocation, forwarded_env


def train(args: argparse.Namespace, location: RunLocation, tier: str, cfg: Any, store: str | None) -> int:
    """Train the resolved run; its exit code."""
    run_dir = location.local
    trainable = registry.load(args.stem)
    trackers = run_trackers(args, run_dir)
    dashboard = cluster.start(args.address, env=forwarded_env(), verbose=args.verbose)
    print(f"Ray dashboard: {dashboard or 'not running'}", flush=True)
    if args.gpu and cluster.cluster_gpus() < args.workers:
        raise UserError(f"--gpu asks for {args.workers} GPU(s); the Ray cluster has {cluster.cluster_gpus()}")
    if args.workers * (args.cpus_per_worker or 1) > cluster.cluster_cpus():
        raise UserError(
            f"--workers {args.workers} needs {args.workers * (args.cpus_per_worker or 1):g} CPUs; "
            f"the Ray cluster has {cluster.cluster_cpus()}"
        )
    print(f"[{args.stem}] preparing data ({cfg.data_dir or 'synthetic set'})", flush=True)
    # The data a resumed run started with; none when it lost its meta.json before its first checkpoint.
    pinned = artifacts.read_json(run_dir / artifacts.META_FILE) if args.resume and (run_dir / artifacts.META_FILE).exists() else None
    splits, meta = data.prepare(trainable, cfg, store, pinned=pinned, bars=progress.wanted(args.progress))
    print(f"[{args.stem}] rows: {meta['rows']}  in {meta['preprocess_s']}s", flush=True)
    if not args.resume:  # a tier's min_steps on this data; a resumed run keeps what it saved
        cfg, grown = config_lib.fit_to_data(cfg, meta["rows"]["train"], args.workers)
        if grown:
            print(f"[{args.stem}] {grown}", flush=True)
    trainable.build_model(cfg, meta)  # a shape error (dim vs heads...) is reported here, not in a worker

    args.cpus_per_worker = args.cpus_per_worker or cluster.default_cpus_per_worker(args.workers)
    launch = {"workers": args.workers, "cpus_per_worker": args.cpus_per_worker, "gpu": args.gpu}
    manifest = artifacts.start(
        run_dir,
        trainable,
        tier=tier,
        cfg=cfg,
        meta=meta,
        hardware=cluster.hardware(),
        resumed=args.resume,
        dashboard=dashboard,
        launch=launch,
    )
    trackers.open(
        run_dir / artifacts.MANIFEST_FILE,
        manifest,
        run_dir.name,
        tracking.run_params(args.stem, tier, manifest["config"]),
        tracking.run_tags(args.stem, tier, run_dir.name, location.remote or run_dir),
    )
    location.push()
    print(f"[{args.stem}] run directory: {location.remote or run_dir}", flush=True)
    notice = preempt.Notice.remote()
    replaced = preempt.install_driver_handler(notice, lambda saved: (_preempted(args, location, manifest, saved), trackers.end("KILLED")))
    try:
        # Before training, so the monitor shows it; a resume keeps the first attempt's (fitting may be costly).
        manifest["baseline"] = baseline.of_run(trainable, cfg, splits, meta, manifest.get("baseline"))
        artifacts.write_json(run_dir / artifacts.MANIFEST_FILE, manifest)
        print(baseline.describe(args.stem, manifest["baseline"], trainable.METRIC[0]), flush=True)
        result = trainer.build(
            trainable,
            cfg,
            meta,
            splits,
            run_dir,
            workers=args.workers,
            use_gpu=args.gpu,
            cpus_per_worker=args.cpus_per_worker,
            max_failures=args.max_failures,
            fail_at_epoch=args.fail_at_epoch,
            train_storage=location.train_storage,
            notice=notice,
            show_progress=progress.wanted(args.progress),
            callbacks=trackers.callbacks(run_dir),
            run_info={"tier": tier, "launch": launch, "started": manifest["started"]},
        ).fit()
        manifest = artifacts.finish(
            run_dir, trainable, cfg=cfg, meta=meta, result=result, val_split=splits["val"], manifest=manifest, test_split=splits.get("test")
        )
        checkpoints.remove_orphans(location.run_uri)
        trackers.finish(run_dir, manifest["history"])
    except BaseException as exc:
        artifacts.fail(run_dir, manifest, f"{type(exc).__name__}: {exc}".splitlines()[0])
        location.push()
        trackers.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        preempt.uninstall_driver_handler(notice, replaced)
    location.push()
    print(summary(location, manifest, args.storage), flush=True)
    # A trainable's own checks of the finished run (captions that collapsed to one for every image).
    for warning in getattr(trainable, "run_warnings", lambda _manifest: [])(manifest):
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    baseline.warn(args.stem, manifest.get("baseline"), *trainable.METRIC, manifest["metric"]["best"])
    return 0


def _preempted(args: argparse.Namespace, location: RunLocation, manifest: dict, saved: str | None) -> None:
    """The driver was told to stop (SIGTERM): the run is interrupted, resumable from ``saved``."""
    artifacts.write_json(
        location.local / artifacts.MANIFEST_FILE, {**manifest, "status": "interrupted", "updated": artifacts.now(), "preempted_at": saved}
    )
    location.push()
    where = f"checkpoint {saved}" if saved else "no new checkpoint (the workers did not answer in time)"
    print(
        f"[{args.stem}] preempted: {where}; continue with: python -m platform.run {args.stem} "
        f"--storage {args.storage} --name {location.name} --resume",
        flush=True,
    )


def run_trackers(args: argparse.Namespace, run_dir: Path) -> tracking.Tracking:
    """``--tracker``, checked before Ray starts; a resumed run keeps its trackers and MLflow run."""
    saved = artifacts.read_json(run_dir / artifacts.MANIFEST_FILE) if args.resume else None
    chosen = args.tracker or tracking.saved_trackers(saved) or tracking.DEFAULT
    return tracking.Tracking.check(chosen, args.storage, args.stem, saved)


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
