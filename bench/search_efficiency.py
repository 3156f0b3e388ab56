"""Search efficiency: random search vs Optuna TPE vs TPE with ASHA early stopping, same trials and tier.

    .venv/bin/python -m bench.search_efficiency [--small | --full]

``--small`` (default): tier smoke, 4 trials a sweep (a few minutes: each trial is a Ray Train run);
``--full``: tier fast, 16 trials a sweep. Run from the repository root.

Each sweep is ``python -m platform.tune asl --tiers T --trials N --sampler S --scheduler X`` (a
subprocess with its own Ray, its own storage in a temporary folder, search seed 0). From each
sweep's results.csv: the best val/acc, the compute spent (the sum of the trials' ``train_s``, i.e.
their epochs' seconds, and of their epochs), and the compute spent, in trial order, until a trial
first reached the target quality: the lowest of the three sweeps' best val/acc, which all reached.
Ratios are against random search. Note: Optuna's TPE samples its first 10 trials at random
(``n_startup_trials``), so below 11 trials ``tpe`` and ``random`` differ only by ASHA.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.common import (
    child_env,
    parse_setting,
    print_summary,
    require_success,
    run_timed,
)

SETTINGS = {"small": ("smoke", 4), "full": ("fast", 16)}
SWEEPS = (("random", "none"), ("tpe", "none"), ("tpe", "asha"))
METRIC = "val/acc"


@dataclass
class Sweep:
    name: str
    results: pd.DataFrame
    """results.csv: one row a trial, in the order the trials were created."""
    wall_s: float

    @property
    def best(self) -> float:
        return float(self.results[METRIC].max())

    @property
    def train_s(self) -> float:
        return float(self.results["train_s"].sum())

    @property
    def epochs(self) -> int:
        return int(self.results["epoch"].sum())

    def configs(self) -> list[dict]:
        columns = ["tier", *(c for c in self.results.columns if c.startswith("config/"))]
        return self.results[columns].to_dict("records")

    def train_s_to_reach(self, quality: float) -> float:
        """Train seconds of the trials up to and including the first that reached ``quality``."""
        spent = self.results["train_s"].cumsum()
        reached = self.results.index[self.results[METRIC] >= quality]
        return float(spent[reached[0]]) if len(reached) else float("nan")


def run_sweep(tier: str, trials: int, sampler: str, scheduler: str, storage: Path) -> Sweep:
    name = f"{sampler}-{scheduler}"
    command = [
        "-m",
        "platform.tune",
        "asl",
        "--tiers",
        tier,
        "--trials",
        str(trials),
        "--sampler",
        sampler,
        "--scheduler",
        scheduler,
        "--storage",
        str(storage),
        "--name",
        name,
    ]
    run = run_timed(command, child_env(), timeout=3600)
    require_success(run, f"python -m platform.tune ({name})")
    results = pd.read_csv(storage / "asl" / "sweeps" / name / "results.csv").dropna(subset=[METRIC])
    return Sweep(name, results.reset_index(drop=True), run.lines[-1][0])


def summary_rows(sweeps: list[Sweep], target: float) -> list[tuple[str, str]]:
    """One row a sweep, then each sweep against random search (the first)."""
    baseline = sweeps[0]
    rows = []
    for sweep in sweeps:
        to_target = sweep.train_s_to_reach(target)
        rows.append(
            (
                sweep.name,
                (
                    f"best {METRIC} {sweep.best:.3f}  compute {sweep.train_s:7.1f} train-s, "
                    f"{sweep.epochs:3d} epochs ({len(sweep.results)} trials)  to reach {target:.3f}: "
                    f"{to_target:6.1f} train-s  wall {sweep.wall_s:.0f}s"
                ),
            )
        )
    for sweep in sweeps[1:]:
        rows.append(
            (
                f"{sweep.name} / random",
                (
                    f"compute {sweep.train_s / baseline.train_s:.2f}, to reach the target "
                    f"{sweep.train_s_to_reach(target) / baseline.train_s_to_reach(target):.2f}, "
                    f"best {sweep.best - baseline.best:+.3f}"
                ),
            )
        )
    return rows


def headline(sweeps: list[Sweep], target: float, trials: int) -> dict:
    baseline = sweeps[0]
    return {
        "trials": trials,
        "target": round(target, 4),
        "best": {sweep.name: round(sweep.best, 4) for sweep in sweeps},
        "compute_vs_random": {sweep.name: round(sweep.train_s / baseline.train_s, 3) for sweep in sweeps[1:]},
        "to_target_vs_random": {
            sweep.name: round(sweep.train_s_to_reach(target) / baseline.train_s_to_reach(target), 3) for sweep in sweeps[1:]
        },
    }


def main() -> int:
    args = parse_setting(__doc__)
    tier, trials = SETTINGS["full" if args.full else "small"]
    with tempfile.TemporaryDirectory(prefix="bench-search-") as storage:
        sweeps = [run_sweep(tier, trials, sampler, scheduler, Path(storage)) for sampler, scheduler in SWEEPS]
    target = min(sweep.best for sweep in sweeps)
    rows = summary_rows(sweeps, target)
    notes = []
    if sweeps[0].configs() == sweeps[1].configs():
        notes.append(
            "tpe-none sampled exactly random-none's configurations (TPE's first 10 trials are random): their differences are timing noise"
        )
    print_summary(
        f"search efficiency: asl tier {tier}, {trials} trials a sweep",
        rows,
        [
            *notes,
            ("train-s = the sum of the trials' epoch seconds (Ray and trial start-up excluded); wall = the whole sweep, start-up included"),
        ],
        headline=headline(sweeps, target, trials),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
