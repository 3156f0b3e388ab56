"""Sweep a trainable's tiers and hyperparameters with Ray Tune and Optuna; save the best as a tier.

    python -m platform.tune asl [--tiers fast,standard] [--trials N] [--concurrent K]
                                [--workers-per-trial W] [--cpus-per-trial C] [--gpu]
                                [--objective val/acc:max | --pareto val/acc:max,train_s:min]
                                [--time-budget 30m] [--scheduler asha|none] [--save-tier tuned]
                                [--data DIR] [--config FILE.yaml] [--set key=value ...]
                                [--address ADDR] [--storage PATH|URI]
                                [--name NAME] [--resume] [--dry-run]

Each trial is a run assembled as ``python -m platform.run`` assembles one (the same code: its run
directory holds what a run's does), on ``--workers-per-trial`` workers sharing ``--cpus-per-trial``,
with a GPU each under ``--gpu``, with the config: defaults, the trial's tier, ``--config``, its sampled values, then
``--set``. The first trials train each tier's own configuration (no sampled values); Optuna's
TPE then samples the tier and the search space (``search_spaces/<stem>.py``); ASHA stops poor
trials early (single objective), comparing a trial only with trials of its own tier;
``--pareto`` optimises several objectives (``train_s``: seconds of training,
``params``: parameter count) and reports their Pareto front. Output, in
``<storage>/<stem>/sweeps/<name>/``: results.csv, pareto.png, best.json, the best trial as a run
directory (``trials/<id>``, usable by ``platform.predict``); and ``<storage>/<stem>/tiers/<tier>.json``
(``<storage>``: a folder, or a URI such as ``s3://bucket/runs``: ``platform/tune/location.py``),
so that ``python -m platform.run asl --tier tuned --storage <storage>`` trains the best config. A
sweep never makes things worse: the tier is saved only when the best trial beats its own tier's
configuration on the (first) objective; otherwise a line says so and no tier file is written.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from platform import config as config_lib
from platform import registry
from platform.errors import UserError, exit_on_user_error, find_user_error
from platform.launching import DEFAULT_STORAGE, Launch
from platform.runs import run_files
from platform.runs import storage as storage_lib
from platform.tracking import ray_views, trackers
from platform.tune import location as sweep_location
from platform.tune.location import BEST_FILE, SETTINGS_FILE, SweepLocation

if TYPE_CHECKING:
    from platform.contract import Trainable
    from platform.tune.plan import Plan

DEFAULT_TRIALS = 8
DEFAULT_KEEP_BEST = 3
# Settings a resumed sweep keeps: passing them again with --resume is an error, not ignored.
KEPT = (
    "tiers",
    "trials",
    "concurrent",
    "cpus_per_trial",
    "workers_per_trial",
    "gpu",
    "objective",
    "pareto",
    "time_budget",
    "scheduler",
    "save_tier",
    "data",
    "config",
    "sets",
    "keep_best",
    "search_seed",
    "sampler",
)
# Counts a sweep cannot have zero of, nor fewer.
POSITIVE = ("trials", "concurrent", "cpus_per_trial", "workers_per_trial", "keep_best")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m platform.tune", description=__doc__.split("\n\n")[0], epilog=f"trainables: {', '.join(registry.stems())}"
    )
    parser.add_argument("stem", help="the trainable (a module in trainables/)")
    parser.add_argument("--tiers", help=f"comma-separated tiers to search over (default {registry.DEFAULT_TIER})")
    parser.add_argument(
        "--trials",
        type=int,
        help=f"number of trials (default {DEFAULT_TRIALS}), including one a tier that trains the tier's own configuration, run first",
    )
    parser.add_argument("--concurrent", type=int, help="trials at a time (default: cluster CPUs / --cpus-per-trial)")
    parser.add_argument("--cpus-per-trial", type=float, help="CPUs of each trial, shared by its workers (default: one a worker)")
    parser.add_argument("--workers-per-trial", type=int, help="Ray Train workers of each trial (default 1)")
    parser.add_argument(
        "--gpu", action="store_true", default=None, help="one GPU a trial's worker (CUDA, mixed precision); trials at a time fit the GPUs"
    )
    parser.add_argument("--objective", help="metric:min|max to optimise (default: the trainable's METRIC)")
    parser.add_argument("--pareto", help="several metric:mode, e.g. val/acc:max,train_s:min (or params:min)")
    parser.add_argument("--time-budget", help="stop starting and running trials after this long, e.g. 30m, 1h30m")
    parser.add_argument(
        "--scheduler",
        choices=["asha", "none"],
        help="early stopping (default asha: a trial is judged against its own tier's trials, first "
        "halfway through its epochs; none with --pareto)",
    )
    parser.add_argument(
        "--save-tier",
        help="name of the tier the best config is saved as (default tuned), only "
        "when it beats its tier's own configuration on the (first) objective",
    )
    parser.add_argument("--data", help="dataset folder in the trainable's real format (default: synthetic)")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="config keys from a YAML or JSON file for every trial, applied after its tier and "
        "before its sampled values (keys the space searches are still searched: fix one with --set)",
    )
    parser.add_argument("--set", dest="sets", action="append", metavar="KEY=VALUE", help="fix a config key (repeatable)")
    parser.add_argument("--keep-best", type=int, help=f"trials whose checkpoints are kept (default {DEFAULT_KEEP_BEST})")
    parser.add_argument("--search-seed", type=int, help="seed of Optuna's sampler (default 0)")
    parser.add_argument(
        "--sampler",
        choices=["tpe", "random"],
        help="Optuna's sampler: tpe (default; multi-objective with --pareto) or random, the baseline",
    )
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    parser.add_argument(
        "--storage", default=DEFAULT_STORAGE, help=f"where runs and sweeps are written: a folder or a URI (default ./{DEFAULT_STORAGE})"
    )
    parser.add_argument("--name", help="sweep name (default <tiers>-<timestamp>-<random hex>)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted sweep --name")
    parser.add_argument(
        "--tracker",
        metavar="NAMES",
        help="where each trial's metrics go: tensorboard (default), mlflow (a parent run, a child "
        "run a trial; MLFLOW_TRACKING_URI, else <storage>/mlflow.db) or tensorboard,mlflow",
    )
    parser.add_argument("--dry-run", action="store_true", help="show trials, space and estimated compute; train nothing")
    parser.add_argument("--verbose", action="store_true", help="also print Ray's own log lines (its core's, its internal actors')")
    return parser


def settings(args: argparse.Namespace, sweep: SweepLocation) -> dict:
    """The sweep's settings: from the command line, or as saved for ``--resume``."""
    if args.resume:
        if not args.name:
            raise UserError("--resume needs the --name of the sweep to continue")
        given = [f"--{key.replace('_', '-')}" for key in KEPT if getattr(args, key) not in (None, [])]
        if given:
            raise UserError(f"a resumed sweep keeps its settings: drop {', '.join(given)}")
        saved = sweep.read_json(SETTINGS_FILE)
        if saved is None:
            raise UserError(f"nothing to resume at {sweep.shown}")
        return saved
    if sweep.exists(SETTINGS_FILE) or (sweep.local.is_dir() and sweep.remote is None and any(sweep.local.iterdir())):
        raise UserError(_taken(sweep))
    for key in POSITIVE:  # checked before the defaults below, which would take a 0 for "not given"
        if getattr(args, key) is not None and getattr(args, key) <= 0:
            raise UserError(f"--{key.replace('_', '-')} must be positive, not {getattr(args, key):g}")
    chosen = {key: getattr(args, key) for key in KEPT}
    chosen.update(
        tiers=args.tiers or registry.DEFAULT_TIER,
        trials=args.trials or DEFAULT_TRIALS,
        save_tier=args.save_tier or "tuned",
        sets=args.sets or [],
        data=args.data or "",
        keep_best=args.keep_best or DEFAULT_KEEP_BEST,
        search_seed=args.search_seed or 0,
        workers_per_trial=args.workers_per_trial or 1,
        cpus_per_trial=args.cpus_per_trial or float(args.workers_per_trial or 1),
        gpu=bool(args.gpu),
        sampler=args.sampler or "tpe",
    )
    # The file's values, not only its path: a resumed sweep trains with them even if the file changed.
    chosen["config_values"] = config_lib.read_file(args.config) if args.config else {}
    return chosen


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    trainable = registry.load(args.stem)
    args.stem = trainable.stem  # ./mytoy is mytoy from here on: <storage>/mytoy/sweeps/, and in the trials
    if args.name is not None and (Path(args.name).name != args.name or args.name in (".", "..")):
        raise UserError(f"--name {args.name!r} must be a folder name, without '/'")
    sweep = sweep_location.locate(args.storage, args.stem, args.name or run_files.default_name(_prefix(args)))
    chosen = settings(args, sweep)
    if not args.resume:
        check_save_tier(chosen["save_tier"], trainable)
    from platform.tune.plan import Plan  # Optuna and Ray Tune: not imported to print --help

    plan = Plan(trainable, chosen, sweep.storage)
    if args.dry_run:
        import psutil

        concurrent = chosen["concurrent"] or max(1, int(psutil.cpu_count() // chosen["cpus_per_trial"]))
        print(plan.describe(min(concurrent, chosen["trials"])))
        print("dry run: no trial was started")
        return 0

    from platform import cluster
    from platform.tune import runner as sweep_runner

    if args.resume:
        if run_files.hold(sweep.key) is None:
            raise UserError(f"sweep {sweep.shown} is running in another process on this machine: wait for it or stop it")
        sweep.pull()
        if (sweep.local / BEST_FILE).exists():  # its end ran whole: resumed again, it would save its tier over a newer sweep's
            print(f"[sweep] {sweep.shown} has finished: nothing to resume (its results: {sweep.shown}/{BEST_FILE})", flush=True)
            return 0
    tracked = trackers.for_sweep(args.tracker, sweep.local, sweep.storage, args.stem, args.resume)
    # An object store's endpoint and region reach the trials and their workers, as a run's do.
    dashboard = cluster.start(args.address, env=storage_lib.forwarded_env(), verbose=args.verbose)
    print(ray_views.dashboard_line(dashboard), flush=True)
    concurrent, launch = trial_launch(chosen, args, sweep.storage)
    print(plan.describe(concurrent), flush=True)
    if not args.resume:
        sweep = claim(sweep, args.stem, named=bool(args.name), prefix=_prefix(args))
        run_files.write_json(
            sweep.local / SETTINGS_FILE,
            {**chosen, "stem": args.stem, "started": run_files.now(), "command": " ".join(["python -m platform.tune", *sys.argv[1:]])},
        )
    tracked.open_sweep(sweep.local, chosen, args.stem)
    sweep.push()
    try:
        outcome = sweep_runner.run(plan, sweep, concurrent, launch, args.resume)
    except Exception as exc:  # noqa: BLE001 - re-raised; only Tune's missing-metric error is reworded
        tracked.end("FAILED")
        missing = _missing_metric(exc, plan)
        if missing is None:
            raise
        raise missing from exc
    tracked.finish_sweep(sweep.local)
    sweep.push()
    print(outcome, flush=True)
    return 0 if (sweep.local / BEST_FILE).exists() else 1  # no trial gave a result


def trial_launch(chosen: dict, args: argparse.Namespace, storage: str) -> tuple[int, Launch]:
    """Trials at a time, and the launch of each (its workers, their CPUs and GPUs), on this cluster;
    a sweep saved before trials had several workers runs one a trial."""
    from platform import cluster

    workers, gpu = chosen.get("workers_per_trial", 1), chosen.get("gpu", False)
    concurrent, cpus_per_worker = share(chosen, workers, cluster.cluster_cpus(), cluster.cluster_gpus() if gpu else None)
    launch = Launch(workers=workers, cpus_per_worker=cpus_per_worker, gpu=gpu, storage=storage, address=args.address)
    return concurrent, launch.check()


def share(chosen: dict, workers: int, cpus: float, gpus: int | None) -> tuple[int, float]:
    """Trials at a time and each worker's CPUs, so that every trial at once fits the cluster:
    concurrent x (workers x CPUs a worker + TRIAL_DRIVER_CPU) <= its CPUs, the CPUs a worker
    rounded down (rounded up, 4 trials of 4 workers on 16 CPUs asked for 16.04 and never started);
    ``gpus``: the cluster's, when each worker takes one."""
    from platform.tune.trial import TRIAL_DRIVER_CPU

    if gpus is not None and gpus < workers:
        raise UserError(f"--gpu asks for {workers} GPU(s) a trial; the Ray cluster has {gpus}")
    fits = int(cpus // chosen["cpus_per_trial"]) if gpus is None else min(int(cpus // chosen["cpus_per_trial"]), gpus // workers)
    concurrent = min(chosen["concurrent"] or max(1, fits), chosen["trials"])
    # Each trial's function holds TRIAL_DRIVER_CPU besides its workers: leave room for both.
    per_trial = min(chosen["cpus_per_trial"], (cpus - TRIAL_DRIVER_CPU * concurrent) / concurrent)
    cpus_per_worker = math.floor(per_trial / workers * 100) / 100
    if cpus_per_worker <= 0:
        raise UserError(f"--concurrent {concurrent} trials do not fit on {cpus} CPUs")
    return concurrent, cpus_per_worker


def _prefix(args: argparse.Namespace) -> str:
    return (args.tiers or registry.DEFAULT_TIER).replace(",", "-")


def _taken(sweep: SweepLocation) -> str:
    return f"sweep {sweep.shown} already exists: pass --resume to continue it, or another --name"


def claim(sweep: SweepLocation, stem: str, *, named: bool, prefix: str) -> SweepLocation:
    """The new sweep's folder, made this sweep's alone (``RunLocation.claim``: an exclusive create,
    a conditional put on S3): of sweeps given one ``--name`` only the first goes on, whatever the
    timing; a default name another sweep drew in the same second is drawn again."""
    for attempt in range(1 if named else 5):
        candidate = sweep if attempt == 0 else sweep_location.locate(sweep.storage, stem, run_files.default_name(prefix))
        # This machine's lock first, held while the sweep runs: a claim left by a killed sweep is
        # then told from one being written (run_files.claim).
        held = run_files.hold(candidate.key)
        if held is not None:
            if candidate.claim():
                return candidate
            run_files.let_go(held)
    raise UserError(_taken(sweep))


def check_save_tier(name: str, trainable: Trainable) -> None:
    """``--save-tier`` names a file in ``tiers/`` that ``--tier`` will find: not a path, not a preset."""
    space = trainable.space
    if not registry.is_tier_name(name):
        raise UserError(f"--save-tier {name!r} must be a name of letters, digits, '_', '-' and '.'")
    if name in space.TIERS or name in space.ALIASES:
        raise UserError(
            f"--save-tier {name}: {name!r} is a preset tier of {trainable.stem}, which a saved tier cannot replace; choose another name"
        )


def _missing_metric(exc: BaseException, plan: Plan) -> UserError | None:
    """Tune's error when a trial's results lack an objective, as one line naming what it reports."""
    if find_user_error(exc) is not None:
        return None
    chain, current = [], exc
    while current is not None and len(chain) < 10:
        chain.append(str(current))
        current = current.__cause__ or current.__context__
    text = "\n".join(chain)
    if "did not include the specified metric" not in text:
        return None
    missing = [o.metric for o in plan.objectives if f"`{o.metric}`" in text or f"'{o.metric}'" in text.split("Result:")[0]]
    reported = sorted(set(re.findall(r"'((?:val|train)/[^']+)'", text.split("Result:")[-1])))
    return UserError(
        f"unknown metric {(missing or [plan.objectives[0].metric])[0]!r}: {plan.stem} reports {', '.join(reported + ['train_s', 'params'])}"
    )


if __name__ == "__main__":
    sys.exit(main())
