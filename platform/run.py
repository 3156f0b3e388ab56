"""Train a trainable on Ray Train with fault-tolerant checkpoints.

    python -m platform.run asl [--tier smoke|fast|standard|full] [--data DIR] [--config FILE.yaml]
                               [--set key=value ...] [--print-config] [--workers N] [--gpu]
                               [--storage PATH|URI] [--store PATH|URI] [--name NAME] [--resume]
                               [--tracker tensorboard|mlflow|tensorboard,mlflow]

On a cluster: ``ray job submit --working-dir . -- python -m platform.run asl --tier fast``.
``python -m platform.run asl --help`` lists that trainable's tiers and config keys.
"""

from __future__ import annotations

import argparse
import datetime
import signal
import sys
from pathlib import Path
from typing import Any

from platform import artifacts, baseline, progress, registry, tracking
from platform import config as config_lib
from platform import storage as storage_lib
from platform.errors import UserError, exit_on_user_error
from platform.storage import RunLocation
from platform.progress import is_headline

DEFAULT_STORAGE = "runs"
DEFAULT_MAX_FAILURES = 3


def build_parser(stem: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m platform.run",
        description="Train a trainable on Ray Train, checkpointing as it goes.",
        epilog=describe(stem),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("stem", help="the trainable (a module in trainables/)")
    parser.add_argument("--tier", default=None, help=f"speed/quality preset (default {registry.DEFAULT_TIER})")
    parser.add_argument("--data", default="", help="dataset folder in the trainable's real format (default: synthetic)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="config keys from a YAML or JSON file, applied after the tier and before --set "
                             "(a run directory's config.json is one)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (a --config file) and exit, before Ray starts")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (default 1)")
    parser.add_argument("--cpus-per-worker", type=float, default=None,
                        help="CPUs each worker reserves (default: the cluster's CPUs shared among the workers)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker (CUDA, mixed precision)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"where runs are written: a folder (default ./{DEFAULT_STORAGE}) or a URI such as s3://bucket/runs")
    parser.add_argument("--store", default=None,
                        help="where preprocessed data is kept, a folder every node sees or a URI "
                             "(default: <storage>/.store for a URI storage, else ~/.cache/rayplatform/store)")
    parser.add_argument("--name", default=None, help="run name (default <tier>-<timestamp>)")
    parser.add_argument("--resume", action="store_true", help="continue the run --name from its latest checkpoint")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    parser.add_argument("--max-failures", type=int, default=DEFAULT_MAX_FAILURES,
                        help=f"worker failures to recover from (default {DEFAULT_MAX_FAILURES})")
    parser.add_argument("--progress", choices=progress.CHOICES, default="auto",
                        help="progress bars of preprocessing and of each epoch's steps (default auto: when output is a terminal)")
    parser.add_argument("--verbose", action="store_true", help="also print Ray's own log lines (its core's, its internal actors')")
    parser.add_argument("--tracker", default=None, metavar="NAMES",
                        help=f"where metrics go: {', '.join(tracking.CHOICES)}, or both comma-separated (default "
                             f"{tracking.DEFAULT}; a resume keeps the run's). mlflow: MLFLOW_TRACKING_URI, else "
                             "<storage>/mlflow.db")
    parser.add_argument("--fail-at-epoch", type=int, default=None, metavar="N",
                        help="fault injection for tests and demos: a worker dies as epoch N starts (first attempt only)")
    return parser


def describe(stem: str | None) -> str:
    """The --help epilog: trainables and, for a known stem, its tiers and config keys."""
    lines = [f"trainables: {', '.join(registry.stems())}"]
    if stem in registry.stems():
        trainable, space = registry.load(stem)
        lines.append(f"tiers of {stem} (what each changes from the defaults below; --print-config shows a whole config):")
        aliases = getattr(space, "ALIASES", {})
        for tier in registry.tier_names(space, Path(DEFAULT_STORAGE)):
            changes = registry.tier_overrides(space, tier, Path(DEFAULT_STORAGE))
            shown = ", ".join(f"{k}={v!r}" for k, v in changes.items()) or "the defaults"
            lines.append(f"  {tier}: " + (f"the same as {aliases[tier]}" if tier in aliases else shown))
        lines.append(f"config keys of {stem} (--set key=value, or in a --config file), with their defaults:")
        docs = config_lib.field_docs(trainable.Config)
        for key, value in config_lib.to_dict(trainable.Config()).items():
            lines.append(f"  {key} = {value!r}\n      {docs.get(key, '')}")
    else:
        lines.append("python -m platform.run <stem> --help lists the tiers and config keys of <stem>")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    stem = next((a for a in argv if not a.startswith("-")), None)
    return build_parser(stem).parse_args(argv)


def resolve_run(args: argparse.Namespace) -> tuple[RunLocation, str, Any]:
    """Where the run lives, its tier and config: new, or read back from the run for ``--resume``."""
    trainable, _space = registry.load(args.stem)
    if args.resume:
        if not args.name:
            raise UserError("--resume needs the --name of the run to continue")
        if args.tier or args.sets or args.data or args.config:
            raise UserError("a resumed run keeps its config: drop --tier, --config, --set and --data")
        location = storage_lib.locate(args.storage, args.stem, args.name)
        if not location.exists(artifacts.CONFIG_FILE):
            raise UserError(f"nothing to resume at {location.remote or location.local}")
        location.pull()
        cfg = config_lib.from_dict(trainable.Config, artifacts.read_json(location.local / artifacts.CONFIG_FILE))
        manifest = artifacts.read_json(location.local / artifacts.MANIFEST_FILE)
        pin_launch(args, manifest.get("launch"))
        return location, manifest["tier"], cfg
    tier, cfg = new_config(args)
    location = storage_lib.locate(args.storage, args.stem, args.name or f"{tier}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    taken = location.exists(artifacts.CONFIG_FILE) if location.remote else location.local.exists() and any(location.local.iterdir())
    if taken:
        raise UserError(f"run {location.remote or location.local} already exists: pass --resume to continue it, or another --name")
    return location, tier, cfg


def new_config(args: argparse.Namespace) -> tuple[str, Any]:
    """A new run's tier and config: defaults, tier, ``--config``, ``--data``, ``--set``; checked."""
    tier = args.tier or registry.DEFAULT_TIER
    # Sweeps save tiers in a storage folder (python -m platform.tune), not in object stores.
    tiers_storage = None if storage_lib.is_uri(args.storage) else Path(args.storage).expanduser().resolve()
    cfg = registry.resolve(args.stem, tier, args.sets, data_dir=args.data, storage=tiers_storage,
                           config_file=args.config)
    if cfg.data_dir and not Path(cfg.data_dir).expanduser().is_dir():
        raise UserError(f"data folder not found: {cfg.data_dir}")
    return tier, cfg


def print_config(args: argparse.Namespace) -> None:
    if args.resume:
        _location, tier, cfg = resolve_run(args)
    else:
        tier, cfg = new_config(args)
    print(f"# {args.stem}, tier {tier}{', resumed run ' + args.name if args.resume else ''}: "
          f"python -m platform.run {args.stem} --config FILE runs this config")
    print(config_lib.as_yaml(cfg), end="")


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    trainable, _space = registry.load(args.stem)
    if args.print_config:
        print_config(args)
        return 0
    location, tier, cfg = resolve_run(args)
    run_dir = location.local
    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    trackers = run_trackers(args, run_dir)

    from platform import checkpoints, cluster, data, preempt, trainer

    dashboard = cluster.start(args.address, env=storage_lib.forwarded_env(), verbose=args.verbose)
    print(f"Ray dashboard: {dashboard or 'not running'}", flush=True)
    if args.gpu and cluster.cluster_gpus() < args.workers:
        raise UserError(f"--gpu asks for {args.workers} GPU(s); the Ray cluster has {cluster.cluster_gpus()}")
    if args.workers * (args.cpus_per_worker or 1) > cluster.cluster_cpus():
        raise UserError(f"--workers {args.workers} needs {args.workers * (args.cpus_per_worker or 1):g} CPUs; "
                        f"the Ray cluster has {cluster.cluster_cpus()}")
    print(f"[{args.stem}] preparing data ({cfg.data_dir or 'synthetic set'})", flush=True)
    pinned = artifacts.read_json(run_dir / artifacts.META_FILE) if args.resume else None
    splits, meta = data.prepare(trainable, cfg, store_root(args), pinned=pinned, bars=progress.wanted(args.progress))
    print(f"[{args.stem}] rows: {meta['rows']}  in {meta['preprocess_s']}s", flush=True)
    if not args.resume:  # a tier's min_steps on this data; a resumed run keeps what it saved
        cfg, grown = config_lib.fit_to_data(cfg, meta["rows"]["train"], args.workers)
        if grown:
            print(f"[{args.stem}] {grown}", flush=True)
    trainable.build_model(cfg, meta)  # a shape error (dim vs heads...) is reported here, not in a worker

    args.cpus_per_worker = args.cpus_per_worker or cluster.default_cpus_per_worker(args.workers)
    launch = {"workers": args.workers, "cpus_per_worker": args.cpus_per_worker, "gpu": args.gpu}
    manifest = artifacts.start(run_dir, args.stem, tier, cfg, meta, cluster.hardware(), args.resume, dashboard, launch)
    trackers.open(run_dir / artifacts.MANIFEST_FILE, manifest, run_dir.name, tracking.run_params(args.stem, tier, manifest["config"]),
                  tracking.run_tags(args.stem, tier, run_dir.name, location.remote or run_dir))
    location.push()
    print(f"[{args.stem}] run directory: {location.remote or run_dir}", flush=True)
    notice = preempt.Notice.remote()
    replaced = preempt.install_driver_handler(
        notice, lambda saved: (_preempted(args, location, manifest, saved), trackers.end("KILLED")))
    try:
        # Before training, so the monitor shows it; a resume keeps the first attempt's (fitting may be costly).
        manifest["baseline"] = baseline.of_run(trainable, cfg, splits, meta, manifest.get("baseline"))
        artifacts.write_json(run_dir / artifacts.MANIFEST_FILE, manifest)
        print(baseline.describe(args.stem, manifest["baseline"], trainable.METRIC[0]), flush=True)
        result = trainer.build(
            args.stem, cfg, meta, splits, run_dir,
            workers=args.workers, use_gpu=args.gpu, cpus_per_worker=args.cpus_per_worker,
            max_failures=args.max_failures, fail_at_epoch=args.fail_at_epoch, train_storage=location.train_storage,
            notice=notice, show_progress=progress.wanted(args.progress), callbacks=trackers.callbacks(run_dir),
        ).fit()
        manifest = artifacts.finish(
            run_dir, trainable, cfg, meta, result, splits["val"], manifest, test_split=splits.get("test")
        )
        checkpoints.remove_orphans(trainer.run_uri(run_dir, location.train_storage))
        trackers.finish(run_dir, manifest["history"])
    except BaseException as exc:
        artifacts.fail(run_dir, manifest, f"{type(exc).__name__}: {exc}".splitlines()[0])
        location.push()
        trackers.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if replaced is not None:  # None: the replaced handler was not Python's to put back
            signal.signal(signal.SIGTERM, replaced)
    location.push()
    print(summary(location, manifest, args.storage), flush=True)
    # A trainable's own checks of the finished run (captions that collapsed to one for every image).
    for warning in getattr(trainable, "run_warnings", lambda _manifest: [])(manifest):
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    baseline.warn(args.stem, manifest.get("baseline"), *trainable.METRIC, manifest["metric"]["best"])
    return 0


def _preempted(args: argparse.Namespace, location: RunLocation, manifest: dict, saved: str | None) -> None:
    """The driver was told to stop (SIGTERM): the run is interrupted, resumable from ``saved``."""
    artifacts.write_json(location.local / artifacts.MANIFEST_FILE,
                         {**manifest, "status": "interrupted", "updated": artifacts.now(), "preempted_at": saved})
    location.push()
    where = f"checkpoint {saved}" if saved else "no new checkpoint (the workers did not answer in time)"
    print(f"[{args.stem}] preempted: {where}; continue with: python -m platform.run {args.stem} "
          f"--storage {args.storage} --name {location.name} --resume", flush=True)


def run_trackers(args: argparse.Namespace, run_dir: Path) -> tracking.Tracking:
    """``--tracker``, checked before Ray starts; a resumed run keeps its trackers and MLflow run."""
    saved = artifacts.read_json(run_dir / artifacts.MANIFEST_FILE) if args.resume else None
    chosen = args.tracker or tracking.saved_trackers(saved) or tracking.DEFAULT
    return tracking.Tracking.check(chosen, args.storage, args.stem, saved)


def pin_launch(args: argparse.Namespace, launch: dict | None) -> None:
    """A resume runs on the devices and thread count the run started with, since both change the
    floats (a run is bitwise only on the same ones); on another ``--workers`` the exactness is the
    sample order's (each remaining sample once), so the CPUs a worker may change with it."""
    if launch is None:  # a run from before launches were recorded
        return
    if args.gpu != launch["gpu"]:
        raise UserError(f"this run trained {'with' if launch['gpu'] else 'without'} --gpu: a resume keeps it "
                        f"({'add' if launch['gpu'] else 'drop'} --gpu)")
    if args.workers != launch["workers"]:
        return
    if args.cpus_per_worker is None:
        args.cpus_per_worker = launch["cpus_per_worker"]
    elif args.cpus_per_worker != launch["cpus_per_worker"]:
        raise UserError(f"this run trained with --cpus-per-worker {launch['cpus_per_worker']:g}: a resume on "
                        f"{args.workers} worker(s) keeps it (torch's thread count changes the results)")


def store_root(args: argparse.Namespace) -> str | None:
    """``--store``; with an object-store ``--storage`` the store sits beside the runs, where every
    node reads it; else the platform cache (``None``)."""
    if args.store:
        return args.store
    return f"{args.storage.rstrip('/')}/.store" if storage_lib.is_uri(args.storage) else None


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
        lines.insert(1, "  test split: " + "  ".join(
            f"{k} {v:.4f}" + (baseline.shown(manifest.get("baseline"), metric["name"], "test") if k == test_metric else "")
            for k, v in shown.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
