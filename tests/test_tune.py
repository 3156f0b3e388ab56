"""``python -m platform.tune`` end to end on the shared Ray instance: small sweeps of the smoke tier.

    .venv/bin/python -m pytest tests/test_tune.py

Two sweeps of three 2-epoch trials (one single-objective with ASHA, one Pareto sweep that is killed
and resumed) and one run of the saved tier; the argument checks run without Ray.
"""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, TEST_ENV, last_line, run_command

SMOKE = ["asl", "--tiers", "smoke", "--set", "epochs=2", "--trials", "3", "--concurrent", "2"]
STATUSES = {"completed", "early-stopped (ASHA)", "error", "stopped (time budget)"}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sweeps")


@pytest.fixture(scope="module")
def sweep(ray_address, storage) -> tuple[Path, str]:
    result = run_command("tune", *SMOKE, "--storage", str(storage), "--name", "single", address=ray_address)
    assert result.returncode == 0, result.stderr[-4000:]
    return storage / "asl" / "sweeps" / "single", result.stdout


def test_a_sweep_writes_results_plot_best_and_the_tuned_tier(sweep, storage):
    sweep_dir, stdout = sweep
    results = pd.read_csv(sweep_dir / "results.csv")
    assert len(results) == 3 and set(results["status"]) <= STATUSES, results[["status", "reason"]]
    assert (results["tier"] == "smoke").all() and results["val/acc"].notna().all()
    assert {"config/lr", "config/dim", "train_s", "params", "time_s", "reason"} <= set(results.columns)
    assert (sweep_dir / "pareto.png").read_bytes()[:8] == PNG

    best = json.loads((sweep_dir / "best.json").read_text())
    completed = results[results["status"] == "completed"]
    assert best["objectives"]["val/acc:max"] == completed["val/acc"].max()
    assert results.loc[results["best"], "trial_id"].tolist() == [best["trial_id"]]
    run_dir = Path(best["run_dir"])
    assert (run_dir / "best_model.pt").stat().st_size > 0 and best["best_model"] == str(run_dir / "best_model.pt")
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "finished"

    tier = json.loads((storage / "asl" / "tiers" / "tuned.json").read_text())
    assert tier["base"] == "smoke" and tier["source"]["trial"] == best["trial_id"]
    assert tier["overrides"]["lr"] == best["params"]["lr"] and tier["overrides"]["epochs"] == 2
    assert "saved tier 'tuned'" in stdout and "best: trial " + best["trial_id"] in stdout
    # A trial table, not the trials' Train workers' epoch lines interleaved without their names.
    tables = [m.start() for m in re.finditer(r"^\[sweep\] trial +state +tier +params +epoch +val/acc$", stdout, re.M)]
    assert tables and "[asl] epoch " not in stdout, stdout[-3000:]
    last_table = stdout[tables[-1]:].splitlines()
    assert all(any(line.split()[:2] == [t, "TERMINATED"] for line in last_table) for t in results["trial_id"]), stdout[-3000:]


def test_the_tuned_tier_trains_with_platform_run(sweep, storage, ray_address):
    best = json.loads((sweep[0] / "best.json").read_text())
    result = run_command("run", "asl", "--tier", "tuned", "--storage", str(storage), "--name", "tuned-run",
                         address=ray_address)
    assert result.returncode == 0, result.stderr[-4000:]
    manifest = json.loads((storage / "asl" / "tuned-run" / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["tier"] == "tuned"
    for key, value in best["params"].items():
        assert manifest["config"][key] == value, key


def _front_is_non_dominated(results: pd.DataFrame) -> None:
    completed = results[results["status"] == "completed"]
    points = list(zip(completed["val/acc"], completed["train_s"], completed["pareto"]))

    def dominates(a, b):  # val/acc max, train_s min
        return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])

    for point in points:
        dominated = any(dominates(other, point) for other in points)
        assert point[2] == (not dominated), points
    assert not results.loc[results["status"] != "completed", "pareto"].any()


def test_an_interrupted_pareto_sweep_resumes_without_repeating_finished_trials(ray_address, storage):
    name, sweep_dir = "pareto", storage / "asl" / "sweeps" / "pareto"
    command = [sys.executable, "-m", "platform.tune", *SMOKE, "--pareto", "val/acc:max,train_s:min",
               "--storage", str(storage), "--name", name]
    # Tune saves its experiment state at most this often: the kill must come after a save.
    env = {**os.environ, **TEST_ENV, "RAY_ADDRESS": ray_address, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    driver = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    finished: list[str] = []
    while not finished and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.5)
        if (sweep_dir / "results.csv").exists():
            table = pd.read_csv(sweep_dir / "results.csv")
            finished = table.loc[table["status"] == "completed", "trial_id"].tolist()
    assert finished and driver.poll() is None, "no trial finished before the driver ended"
    time.sleep(3)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    marks = {trial: (sweep_dir / "trials" / trial / "trial_done.json").stat().st_mtime_ns for trial in finished}

    resumed = run_command("tune", "asl", "--storage", str(storage), "--name", name, "--resume", address=ray_address)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming" in resumed.stdout
    results = pd.read_csv(sweep_dir / "results.csv")
    assert len(results) == 3 and results["trial_id"].is_unique
    for trial, mark in marks.items():  # not trained again: its done-mark is the first run's
        assert (sweep_dir / "trials" / trial / "trial_done.json").stat().st_mtime_ns == mark
        assert f"trial {trial} started" not in resumed.stdout
    _front_is_non_dominated(results)
    best = json.loads((sweep_dir / "best.json").read_text())
    assert set(best["pareto_front"]) == set(results.loc[results["pareto"], "trial_id"])
    assert (sweep_dir / "pareto.png").read_bytes()[:8] == PNG


def test_dry_run_shows_the_plan_and_trains_nothing(tmp_path):
    result = run_command("tune", "asl", "--tiers", "smoke,fast", "--trials", "5", "--dry-run", "--storage", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "sweep asl: 5 trials" in result.stdout and "tier: smoke | fast" in result.stdout
    assert "lr: log-uniform [0.0001, 0.003]" in result.stdout and "dim: choice [64, 96, 128, 192]" in result.stdout
    assert "tier fast: " in result.stdout and "10 epochs" in result.stdout and "wall-clock" in result.stdout
    assert "no trial was started" in result.stdout
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--objective", "accuracy:max"], "error: unknown metric 'accuracy'"),
        (["--pareto", "val/acc:max"], "error: --pareto needs at least two metrics"),
        (["--time-budget", "5s"], "error: --time-budget 5s is too small for one trial"),
        (["--tiers", "smoke,huge"], "error: unknown tier 'huge' for asl"),
        (["--resume", "--name", "never-ran"], "error: nothing to resume at"),
    ],
)
def test_bad_arguments_end_with_one_error_line(args, message, tmp_path):
    tiers = [] if "--resume" in args else ["--tiers", "smoke"]  # a resumed sweep keeps its tiers
    result = run_command("tune", "asl", *tiers, *args, "--storage", str(tmp_path), "--dry-run")
    assert result.returncode == 2, result.stderr[-2000:]
    assert last_line(result.stderr).startswith(message), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_a_space_fixed_by_set_leaves_nothing_to_search(tmp_path):
    from search_spaces import asl

    fixed = [arg for key in asl.SPACE for arg in ("--set", f"{key}={_a_value(asl.SPACE[key])}")]
    result = run_command("tune", "asl", "--tiers", "smoke", *fixed, "--storage", str(tmp_path), "--dry-run")
    assert result.returncode == 2 and last_line(result.stderr).startswith("error: nothing to search")


def _a_value(domain) -> str:
    return str(domain.categories[0]) if hasattr(domain, "categories") else str(domain.lower)
