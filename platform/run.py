"""Train a trainable on Ray Train with fault-tolerant checkpoints.

    python -m platform.run asl [--tier smoke|fast|standard|full] [--data DIR] [--config FILE.yaml]
                               [--set key=value ...] [--print-config] [--workers N|0] [--gpu]
                               [--storage PATH|URI] [--store PATH|URI] [--name NAME] [--resume]
                               [--tracker tensorboard|mlflow|tensorboard,mlflow]

On a cluster: ``ray job submit --working-dir . -- python -m platform.run asl --tier fast``.
``--workers 0`` (local mode) trains in this process, without Ray Train's worker group: the quick
loop of a smoke tier or a new trainable; it has no worker restarts (``platform/train/local.py``).
``python -m platform.run asl --help`` lists that trainable's tiers and config keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from platform import config as config_lib
from platform import registry
from platform.contract import SearchSpace
from platform.errors import UserError, exit_on_user_error
from platform.launching import DEFAULT_MAX_FAILURES, DEFAULT_STORAGE, Launch
from platform.runs import storage as storage_lib
from platform.runs.opening import Request, new_config, open_run
from platform.runs.storage import RunLocation
from platform.tracking import progress, trackers


def build_parser(stem: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m platform.run",
        description="Train a trainable on Ray Train, checkpointing as it goes.",
        epilog=describe(stem),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "stem",
        metavar="trainable",
        help="a built-in stem (asl), a trainable package's folder (./mytoy), an installed plugin, or an importable module (mypkg.mytoy)",
    )
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
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Ray Train workers (default 1); 0: local mode, training in this process without a worker group "
        "(seconds sooner to the first step), with no worker restarts: a crash ends the run, --resume continues it",
    )
    parser.add_argument(
        "--cpus-per-worker",
        type=float,
        default=None,
        help="CPUs each worker reserves (default: the cluster's CPUs shared among the workers); "
        "local mode: this process's torch threads (default: as one worker's)",
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
        "--max-failures",
        type=int,
        default=None,
        help=f"worker failures to recover from (default {DEFAULT_MAX_FAILURES}; local mode has no restarts)",
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
        help=f"where metrics go: {', '.join(trackers.CHOICES)}, or both comma-separated (default "
        f"{trackers.DEFAULT}; a resume keeps the run's). mlflow: MLFLOW_TRACKING_URI, else "
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
    """The --help epilog: trainables and, for a known stem, its tiers and its config keys by owner."""
    plugins = "".join(f", {name} (plugin)" for name in registry.plugins())
    lines = [f"trainables: {', '.join(registry.stems())}{plugins}; or a folder or module of your own (rayplatform new NAME starts one)"]
    try:
        stem = registry.find(stem).stem if stem else None
    except UserError:
        stem = None  # the error comes after --help: python -m platform.run nosuch
    if stem:
        config_cls, space = registry.load_config(stem)
        lines += _tier_lines(stem, space) + _key_lines(stem, config_cls)
    else:
        lines.append("python -m platform.run <stem> --help lists the tiers and config keys of <stem>")
    return "\n".join(lines)


def _tier_lines(stem: str, space: SearchSpace) -> list[str]:
    lines = [f"tiers of {stem} (what each changes from the defaults below; --print-config shows a whole config):"]
    for tier in registry.tier_names(space, Path(DEFAULT_STORAGE)):
        changes = registry.tier_overrides(space, tier, Path(DEFAULT_STORAGE))
        shown = ", ".join(f"{k}={v!r}" for k, v in changes.items()) or "the defaults"
        lines.append(f"  {tier}: " + (f"the same as {space.ALIASES[tier]}" if tier in space.ALIASES else shown))
    for tier, why in registry.broken_tiers(space, Path(DEFAULT_STORAGE)).items():
        lines.append(f"  {tier}: broken, not usable: {why}")
    return lines


def _key_lines(stem: str, config_cls: type) -> list[str]:
    """Each group of ``config.key_groups``, its keys with their defaults and docstrings; a platform
    key whose default the trainable changed says so."""
    titles = {
        "platform": "the platform's keys (how any trainable trains: loop, optimizer, schedule, checkpoints, data order)",
        "trainable": f"{stem}'s keys (its model and its data)",
        "synthetic": f"{stem}'s synthetic-set keys (they shape only the synthetic set it trains on without --data)",
    }
    defaults, docs = config_lib.to_dict(config_cls()), config_lib.field_docs(config_cls)
    platform_defaults = config_lib.to_dict(config_lib.TrainConfig())
    lines = [f"config keys of {stem} (--set key=value, or in a --config file), with their defaults, by owner:"]
    for owner, keys in config_lib.key_groups(config_cls).items():
        lines += [f" {titles[owner]}:"] if keys else []
        for key in keys:
            changed = owner == "platform" and defaults[key] != platform_defaults[key]
            note = f"  ({stem}'s; the platform's is {platform_defaults[key]!r})" if changed else ""
            lines.append(f"  {key} = {defaults[key]!r}{note}\n      {docs.get(key, '')}")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    stem = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(stem).parse_args(argv)
    # From here on it goes by its stem: ./mytoy is mytoy, in <storage>/mytoy/ and in Ray's processes.
    args.stem = registry.find(args.stem).stem
    if not args.print_config:  # which reads its config.py alone, without torch
        registry.load(args.stem)  # the contract, checked before any work: a misspelt hook is one line
    return args


def launch_of(args: argparse.Namespace) -> Launch:
    """The command line's launch options (an option each, of the same name), checked."""
    return Launch(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Launch)}).check()


def request_of(args: argparse.Namespace) -> Request:
    return Request(args.stem, args.tier, tuple(args.sets), args.data, args.config)


def print_config(request: Request, launch: Launch) -> None:
    if launch.resume:
        opened = open_run(request, launch)
        opened.close()
        tier, cfg = opened.tier, opened.cfg
    else:
        tier, cfg = new_config(request, launch.storage)
    print(
        f"# {request.stem}, tier {tier}{', resumed run ' + launch.name if launch.resume else ''}: "
        f"python -m platform.run {registry.find(request.stem).reference} --config FILE runs this config"
    )
    print(config_lib.as_yaml(cfg), end="")


def start(request: Request, launch: Launch) -> tuple[RunLocation, dict]:
    """Train the run ``request`` and ``launch`` name, as ``python -m platform.run`` does (and
    ``rayplatform.train``): where it lives and its finished manifest."""
    trainable = registry.load(request.stem)  # the contract, checked before a name is claimed or Ray started
    opened = open_run(request, launch)
    try:
        store = launch.store_root()
        if store is not None:
            storage_lib.check_writable(store, "--store")
        from platform.train import launch as assembly  # torch and Ray: not imported to print --help or a config

        tracked = assembly.run_trackers(opened.launch, request.stem, opened.location.local)
        dashboard = assembly.connect(opened.launch)
        manifest = assembly.train(trainable, opened.cfg, opened.tier, opened.launch, opened.location, tracked=tracked, dashboard=dashboard)
    finally:
        opened.close()
    assembly.report_finished(trainable, opened.location, manifest, launch.storage)
    return opened.location, manifest


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    launch = launch_of(args)
    if args.print_config:
        print_config(request_of(args), launch)
        return 0
    start(request_of(args), launch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
