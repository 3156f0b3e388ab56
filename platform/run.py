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
import sys
from pathlib import Path
from typing import Any

from platform import checkpoints, locations, progress, registry, resume, run_files, tracking
from platform import config as config_lib
from platform import storage as storage_lib
from platform.errors import UserError, exit_on_user_error
from platform.storage import RunLocation

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
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="config keys from a YAML or JSON file, applied after the tier and before --set (a run directory's config.json is one)",
    )
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config (a --config file) and exit, before Ray starts"
    )
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (default 1)")
    parser.add_argument(
        "--cpus-per-worker",
        type=float,
        default=None,
        help="CPUs each worker reserves (default: the cluster's CPUs shared among the workers)",
    )
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker (CUDA, mixed precision)")
    parser.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help=f"where runs are written: a folder (default ./{DEFAULT_STORAGE}) or a URI such as s3://bucket/runs",
    )
    parser.add_argument(
        "--store",
        default=None,
        help="where preprocessed data is kept, a folder every node sees or a URI "
        "(default: <storage>/.store for a URI storage, else ~/.cache/rayplatform/store)",
    )
    parser.add_argument("--name", default=None, help="run name (default <tier>-<timestamp>)")
    parser.add_argument("--resume", action="store_true", help="continue the run --name from its latest checkpoint")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    parser.add_argument(
        "--max-failures", type=int, default=DEFAULT_MAX_FAILURES, help=f"worker failures to recover from (default {DEFAULT_MAX_FAILURES})"
    )
    parser.add_argument(
        "--progress",
        choices=progress.CHOICES,
        default="auto",
        help="progress bars of preprocessing and of each epoch's steps (default auto: when output is a terminal)",
    )
    parser.add_argument("--verbose", action="store_true", help="also print Ray's own log lines (its core's, its internal actors')")
    parser.add_argument(
        "--tracker",
        default=None,
        metavar="NAMES",
        help=f"where metrics go: {', '.join(tracking.CHOICES)}, or both comma-separated (default "
        f"{tracking.DEFAULT}; a resume keeps the run's). mlflow: MLFLOW_TRACKING_URI, else "
        "<storage>/mlflow.db",
    )
    parser.add_argument(
        "--fail-at-epoch",
        type=int,
        default=None,
        metavar="N",
        help="fault injection for tests and demos: a worker dies as epoch N starts (first attempt only)",
    )
    return parser


def describe(stem: str | None) -> str:
    """The --help epilog: trainables and, for a known stem, its tiers and config keys."""
    lines = [f"trainables: {', '.join(registry.stems())}"]
    if stem in registry.stems():
        config_cls, space = registry.load_config(stem)
        lines.append(f"tiers of {stem} (what each changes from the defaults below; --print-config shows a whole config):")
        aliases = getattr(space, "ALIASES", {})
        for tier in registry.tier_names(space, Path(DEFAULT_STORAGE)):
            changes = registry.tier_overrides(space, tier, Path(DEFAULT_STORAGE))
            shown = ", ".join(f"{k}={v!r}" for k, v in changes.items()) or "the defaults"
            lines.append(f"  {tier}: " + (f"the same as {aliases[tier]}" if tier in aliases else shown))
        for tier, why in registry.broken_tiers(space, Path(DEFAULT_STORAGE)).items():
            lines.append(f"  {tier}: broken, not usable: {why}")
        lines.append(f"config keys of {stem} (--set key=value, or in a --config file), with their defaults:")
        docs = config_lib.field_docs(config_cls)
        for key, value in config_lib.to_dict(config_cls()).items():
            lines.append(f"  {key} = {value!r}\n      {docs.get(key, '')}")
    else:
        lines.append("python -m platform.run <stem> --help lists the tiers and config keys of <stem>")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    stem = next((a for a in argv if not a.startswith("-")), None)
    return build_parser(stem).parse_args(argv)


def resolve_run(args: argparse.Namespace) -> tuple[RunLocation, str, Any, int | None]:
    """Where the run lives, its tier and config, and this process's hold on it (``run_files.hold``):
    a new run's folder claimed, or a run to ``--resume`` read back (its torn files recovered)."""
    config_cls, _space = registry.load_config(args.stem)
    if not args.resume:
        tier, cfg = new_config(args)
        location, held = claim_new_run(args, tier)
        return location, tier, cfg, held
    if not args.name:
        raise UserError("--resume needs the --name of the run to continue")
    if args.tier or args.sets or args.data or args.config:
        raise UserError("a resumed run keeps its config: drop --tier, --config, --set and --data")
    location = storage_lib.locate(args.storage, args.stem, args.name)
    held = run_files.hold(location.key)
    if held is None:
        raise UserError(
            f"run {location.remote or location.local} is being trained by another process on this machine: wait for it or stop it"
        )
    try:
        if not (
            location.exists(run_files.CONFIG_FILE)
            or location.exists(run_files.MANIFEST_FILE)
            or checkpoints.read_snapshot(location.run_uri)
        ):
            raise UserError(f"nothing to resume at {location.remote or location.local}{_never_started(location)}")
        location.pull()
        resumed = resume.recover(location, config_cls, warn=lambda line: print(line, file=sys.stderr, flush=True))
        pin_launch(args, resumed.manifest.get("launch"))
    except BaseException:
        run_files.let_go(held)
        raise
    return location, resumed.tier, resumed.cfg, held


def _never_started(location: RunLocation) -> str:
    claim = location.claimed_by()
    if not claim:
        return ""
    return (
        f" (a command claimed it at {claim.get('claimed')} and was gone before it wrote the run's config: start it again under that --name)"
    )


def claim_new_run(args: argparse.Namespace, tier: str) -> tuple[RunLocation, int]:
    """A new run's folder, claimed before anything is written, and this machine's hold on it:
    ``--name``, or a default name of its tier, the time and a random suffix (two runs started in
    the same second differ)."""
    for _attempt in range(1 if args.name else 5):
        location = storage_lib.locate(args.storage, args.stem, args.name or run_files.default_name(tier))
        held = run_files.hold(location.key)
        if held is not None:
            if location.claim():
                return location, held
            run_files.let_go(held)
    raise UserError(_taken(location, held is None))


def _taken(location: RunLocation, held_here: bool) -> str:
    """Why a new run cannot have the name, and what to do."""
    shown = location.remote or location.local
    if held_here or location.exists(run_files.CONFIG_FILE) or any(p.name != run_files.CLAIM_FILE for p in _entries(location)):
        return f"run {shown} already exists: pass --resume to continue it, or another --name"
    claim = location.claimed_by()
    return (
        f"run {shown} is being started by another command (pid {claim.get('pid')} on {claim.get('host')} since "
        f"{claim.get('claimed')}): pass another --name, or, if that command is gone, delete its {run_files.CLAIM_FILE}"
    )


def _entries(location: RunLocation) -> list[Path]:
    return list(location.local.iterdir()) if location.remote is None and location.local.is_dir() else []


def new_config(args: argparse.Namespace) -> tuple[str, Any]:
    """A new run's tier and config: defaults, tier, ``--config``, ``--data``, ``--set``; checked."""
    tier = args.tier or registry.DEFAULT_TIER
    # Sweeps save tiers in a storage folder (python -m platform.tune), not in object stores.
    tiers_storage = None if storage_lib.is_uri(args.storage) else Path(args.storage).expanduser().resolve()
    cfg = registry.resolve(args.stem, tier, args.sets, data_dir=args.data, storage=tiers_storage, config_file=args.config)
    if cfg.data_dir:
        locations.check_data_folder(cfg.data_dir)
    return tier, cfg


def print_config(args: argparse.Namespace) -> None:
    if args.resume:
        _location, tier, cfg, held = resolve_run(args)
        run_files.let_go(held)
    else:
        tier, cfg = new_config(args)
    print(
        f"# {args.stem}, tier {tier}{', resumed run ' + args.name if args.resume else ''}: "
        f"python -m platform.run {args.stem} --config FILE runs this config"
    )
    print(config_lib.as_yaml(cfg), end="")


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.print_config:
        print_config(args)
        return 0
    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    location, tier, cfg, held = resolve_run(args)
    try:
        store = store_root(args)
        if store is not None:
            storage_lib.check_writable(store, "--store")
        from platform import launch  # torch and Ray: not imported to print --help or a config

        return launch.train(args, location, tier, cfg, store)
    except BaseException:
        if not args.resume:
            location.release()  # a run that never started leaves no folder to refuse its name
        raise
    finally:
        run_files.let_go(held)


def pin_launch(args: argparse.Namespace, launch: dict | None) -> None:
    """A resume runs on the devices and thread count the run started with, since both change the
    floats (a run is bitwise only on the same ones); on another ``--workers`` the exactness is the
    sample order's (each remaining sample once), so the CPUs a worker may change with it."""
    if launch is None:  # a run from before launches were recorded
        return
    if args.gpu != launch["gpu"]:
        raise UserError(
            f"this run trained {'with' if launch['gpu'] else 'without'} --gpu: a resume keeps it "
            f"({'add' if launch['gpu'] else 'drop'} --gpu)"
        )
    if args.workers != launch["workers"]:
        return
    if args.cpus_per_worker is None:
        args.cpus_per_worker = launch["cpus_per_worker"]
    elif args.cpus_per_worker != launch["cpus_per_worker"]:
        raise UserError(
            f"this run trained with --cpus-per-worker {launch['cpus_per_worker']:g}: a resume on "
            f"{args.workers} worker(s) keeps it (torch's thread count changes the results)"
        )


def store_root(args: argparse.Namespace) -> str | None:
    """``--store``; with an object-store ``--storage`` the store sits beside the runs, where every
    node reads it; else the platform cache (``None``)."""
    if args.store:
        return args.store
    return f"{args.storage.rstrip('/')}/.store" if storage_lib.is_uri(args.storage) else None


if __name__ == "__main__":
    sys.exit(main())
