"""Start-up: seconds from the command to the first training step, by stage, plain script vs ``platform.run``.

    .venv/bin/python -m bench.startup [--small | --full]

``--small`` (default): one run of each on the smoke tier; ``--full``: three of each, medians. Run from
the repository root. The synthetic smoke set is written once beforehand (by the plain script's
first run), so neither side pays for it.

Both commands run as subprocesses; each output line is stamped as it arrives (bench/common.py).
- plain: ``python -m bench.plain_loop --tier smoke`` prints a line as each stage ends: imports
  (interpreter, torch), data (features into tensors), model, first step (one optimizer step).
- platform: ``python -m platform.run asl --tier smoke --set epochs=1``: imports and Ray start (to its
  "Ray dashboard" line), data (Ray Data preprocessing, to "rows:"), run directory (to "run
  directory:"), Train workers and model (to the start of epoch 1 = the epoch line's arrival minus
  its ``epoch_s`` from history.csv), first epoch (on the smoke tier, 3 steps and validation).
- local mode: the same command with ``--workers 0``: the training function in the command's own
  process (``platform/train/local.py``), no Train controller or worker; "Train workers + model" is
  then the model and the store opened in that process.
- bare Ray Train (``python -m bench.bare_trainer``): the same imports and a local Ray, then a
  one-worker ``TorchTrainer`` whose function only reports: the floor under any command that trains
  on Ray Train, the platform's or anyone's.
Ratio = platform / plain seconds to the first training step (start of the first step);
``floor_ratio`` = bare Ray Train / plain, ``platform_vs_floor`` = platform / bare Ray Train,
``local_first_step_ratio`` = local mode / plain (target <= 1.5).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from bench.common import (
    child_env,
    median,
    parse_setting,
    print_summary,
    require_success,
    run_timed,
)

SETTINGS = {"small": 1, "full": 3}
TIMEOUT_S = 900
PLAIN_STAGES = ("imports", "data", "model", "first_step")
BARE_STAGES = ("imports", "ray_start", "first_step", "fit_returned")
PLATFORM_MARKS = (("imports + Ray start", "Ray dashboard:"), ("data", "[asl] rows:"), ("run directory", "[asl] run directory:"))


def plain_stages() -> dict[str, float]:
    """Seconds since the command at which each stage of the plain script ended."""
    run = run_timed(["-m", "bench.plain_loop", "--tier", "smoke"], child_env(), TIMEOUT_S)
    require_success(run, "python -m bench.plain_loop")
    return {name: run.first(f"stage {name}") for name in PLAIN_STAGES}


def bare_stages() -> dict[str, float]:
    """Seconds since the command at which each stage of the bare Ray Train run ended."""
    run = run_timed(["-m", "bench.bare_trainer"], child_env(), TIMEOUT_S)
    require_success(run, "python -m bench.bare_trainer")
    return {name: run.first(f"stage {name}") for name in BARE_STAGES}


def platform_stages(storage: Path, name: str, workers: int = 1) -> dict[str, float]:
    """Seconds since the command at which each stage of ``platform.run`` ended (``workers`` 0: local mode)."""
    command = ["-m", "platform.run", "asl", "--tier", "smoke", "--set", "epochs=1", "--storage", str(storage), "--name", name]
    command += ["--workers", str(workers)]
    run = run_timed(command, child_env(), TIMEOUT_S)
    require_success(run, "python -m platform.run")
    ends = {stage: run.first(mark) for stage, mark in PLATFORM_MARKS}
    first_epoch_line = run.first("[asl] epoch 1/")
    epoch_s = pd.read_csv(storage / "asl" / name / "history.csv")["epoch_s"].iloc[0]
    ends["Train workers + model"] = first_epoch_line - epoch_s
    ends["first epoch"] = first_epoch_line
    ends["exit"] = run.lines[-1][0]
    return ends


def durations(ends: dict[str, float]) -> dict[str, float]:
    """Each stage's own seconds from the cumulative ends."""
    previous, spans = 0.0, {}
    for stage, end in ends.items():
        spans[stage], previous = end - previous, end
    return spans


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {stage: median([run[stage] for run in runs]) for stage in runs[0]}


def main() -> int:
    args = parse_setting(__doc__)
    repeats = SETTINGS["full" if args.full else "small"]
    plain_stages()  # writes the synthetic smoke set once, and warms the file cache for both sides
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as storage:
        plain = medians([plain_stages() for _ in range(repeats)])
        platform = medians([platform_stages(Path(storage), f"startup-{i}") for i in range(repeats)])
        local = medians([platform_stages(Path(storage), f"local-{i}", workers=0) for i in range(repeats)])
    bare = medians([bare_stages() for _ in range(repeats)])
    plain_to_step, platform_to_step, bare_to_step = plain["model"], platform["Train workers + model"], bare["first_step"]
    local_to_step = local["Train workers + model"]
    rows = [(f"plain: {stage}", f"{seconds:6.2f}s") for stage, seconds in durations(plain).items()]
    rows += [(f"platform: {stage}", f"{seconds:6.2f}s") for stage, seconds in durations(platform).items()]
    rows += [(f"local mode: {stage}", f"{seconds:6.2f}s") for stage, seconds in durations(local).items()]
    rows += [(f"bare Ray Train: {stage}", f"{seconds:6.2f}s") for stage, seconds in durations(bare).items()]
    rows += [
        (
            "to the first step",
            f"plain {plain_to_step:.2f}s, platform {platform_to_step:.2f}s, local mode {local_to_step:.2f}s, "
            f"bare Ray Train {bare_to_step:.2f}s",
        ),
        ("ratio platform/plain", f"{platform_to_step / plain_to_step:.2f}"),
        ("ratio local mode/plain", f"{local_to_step / plain_to_step:.2f} (target <= 1.5)"),
        ("ratio bare Ray Train/plain", f"{bare_to_step / plain_to_step:.2f} (the floor of the ratio above)"),
        ("ratio platform/bare Ray Train", f"{platform_to_step / bare_to_step:.2f}"),
        ("imports + Ray start", (f"{platform['imports + Ray start'] / platform_to_step:.0%} of the platform's time to the first step")),
    ]
    print_summary(
        f"start-up: asl smoke tier, median of {repeats} run(s) each",
        rows,
        ["platform 'exit' = after the first epoch until the command returns (best model, plots, manifest)"],
        headline={
            "first_step_ratio": round(platform_to_step / plain_to_step, 3),
            "floor_ratio": round(bare_to_step / plain_to_step, 3),
            "platform_vs_floor": round(platform_to_step / bare_to_step, 3),
            "local_first_step_ratio": round(local_to_step / plain_to_step, 3),
            "local_to_step_s": round(local_to_step, 2),
            "plain_to_step_s": round(plain_to_step, 2),
            "platform_to_step_s": round(platform_to_step, 2),
            "repeats": repeats,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
