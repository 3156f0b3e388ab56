"""``python -m platform.tune`` end to end on the shared Ray instance: small sweeps of the smoke tier.

    .venv/bin/python -m pytest tests/test_tune.py

Two sweeps of three short trials (one single-objective with ASHA and a --config file, one Pareto
sweep that is killed and resumed) and one run of the saved tier, in a folder and on the loopback
S3 server with the same assertions; the argument checks and the pure logic (which trials are the
tiers' own configurations, ASHA's rungs, the save decision) run without Ray.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, S3_BUCKET, TEST_ENV, Storage, last_line, run_command

SMOKE = ["asl", "--tiers", "smoke", "--trials", "3", "--concurrent", "2"]
STATUSES = {"completed", "early-stopped (ASHA)", "error", "stopped (time budget)"}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", params=["folder", "s3"])
def storage(request, tmp_path_factory) -> Storage:
    """Where the sweeps of the tests that take it go: a folder, then a bucket on the loopback S3 server."""
    if request.param == "folder":
        yield Storage(str(tmp_path_factory.mktemp("sweeps")))
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        for key, value in TEST_ENV.items():
            patch.setenv(key, value)
        yield Storage(f"s3://{S3_BUCKET}/{tmp_path_factory.mktemp('s3-sweeps').name}")


def _json(storage: Storage, relative: str) -> dict:
    found = storage.read(relative)
    assert found is not None, f"{storage}/{relative} is missing"
    return json.loads(found)


# The sweep's --config: a learning rate so low that the tier's own configuration (tier, then this
# file) learns nothing in two epochs, while every sampled trial samples lr from the space.
SWEEP_CONFIG = "epochs: 2\nlr: 1.0e-6\n"


@pytest.fixture(scope="module")
def sweep(ray_address, storage, tmp_path_factory) -> tuple[Path, str]:
    """The sweep's files as they are where it lives (for a URI, copied afresh), and its output."""
    config = tmp_path_factory.mktemp("config") / "sweep.yaml"
    config.write_text(SWEEP_CONFIG)
    result = run_command(
        "tune",
        "asl",
        "--tiers",
        "smoke",
        "--config",
        str(config),
        "--objective",
        "val/loss:min",
        "--trials",
        "3",
        "--concurrent",
        "2",
        "--storage",
        str(storage),
        "--name",
        "single",
        address=ray_address,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return storage.files("asl", "sweeps/single"), result.stdout


def test_a_sweep_writes_results_plot_best_and_the_tuned_tier(sweep, storage):
    sweep_dir, stdout = sweep
    results = pd.read_csv(sweep_dir / "results.csv", dtype={"trial_id": str})
    assert len(results) == 3 and set(results["status"]) <= STATUSES, results[["status", "reason"]]
    assert (results["tier"] == "smoke").all() and results["val/loss"].notna().all()
    assert {"config/lr", "config/dim", "train_s", "params", "time_s", "reason"} <= set(results.columns)
    assert (sweep_dir / "pareto.png").read_bytes()[:8] == PNG
    # The tier's own configuration (tier, then --config) ran first, to the end, and is marked.
    own = results[results["tier_default"]]
    assert len(own) == 1 and own["status"].tolist() == ["completed"], results[["trial_id", "tier_default", "status"]]
    own_id = own["trial_id"].iloc[0]
    assert results["trial_id"].iloc[0] == own_id and f"trial {own_id} started (the tier's own config)" in stdout
    own_config = json.loads((sweep_dir / "trials" / own_id / "config.json").read_text())
    assert (own_config["lr"], own_config["epochs"], own_config["dim"]) == (1e-6, 2, 32)
    assert json.loads((sweep_dir / "sweep.json").read_text())["config_values"] == {"epochs": 2, "lr": 1e-6}

    best = json.loads((sweep_dir / "best.json").read_text())
    completed = results[results["status"] == "completed"]
    assert best["objectives"]["val/loss:min"] == completed["val/loss"].min() < own["val/loss"].iloc[0]
    assert results.loc[results["best"], "trial_id"].tolist() == [best["trial_id"]] != [own_id]
    assert best["tier_default_objective"] == own["val/loss"].iloc[0]
    assert best["run_dir"] == storage.run("asl", f"sweeps/single/trials/{best['trial_id']}")
    run_dir = sweep_dir / "trials" / best["trial_id"]
    assert (run_dir / "best_model.pt").stat().st_size > 0 and best["best_model"] == f"{best['run_dir']}/best_model.pt"
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "finished"

    tier = _json(storage, "asl/tiers/tuned.json")
    assert tier["base"] == "smoke" and tier["source"]["trial"] == best["trial_id"]
    assert tier["overrides"]["lr"] == best["params"]["lr"] and tier["overrides"]["epochs"] == 2  # from --config
    assert f"trial {best['trial_id']} beats the smoke tier's own config" in stdout
    assert "saved tier 'tuned'" in stdout and "best: trial " + best["trial_id"] in stdout
    # A trial table, not the trials' Train workers' epoch lines interleaved without their names.
    tables = [m.start() for m in re.finditer(r"^\[sweep\] trial +state +tier +params +epoch +val/loss$", stdout, re.M)]
    assert tables and "[asl] epoch " not in stdout, stdout[-3000:]
    last_table = stdout[tables[-1] :].splitlines()
    assert all(any(line.split()[:2] == [t, "TERMINATED"] for line in last_table) for t in results["trial_id"]), stdout[-3000:]


def test_the_tuned_tier_trains_with_platform_run(sweep, storage, ray_address):
    best = json.loads((sweep[0] / "best.json").read_text())
    result = run_command(
        "run", "asl", "--tier", "tuned", "--workers", "0", "--storage", str(storage), "--name", "tuned-run", address=ray_address
    )
    assert result.returncode == 0, result.stderr[-4000:]
    manifest = _json(storage, "asl/tuned-run/manifest.json")
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


def test_an_interrupted_pareto_sweep_resumes_without_repeating_finished_trials(ray_address, storage, tmp_path, monkeypatch):
    name, sweep_at = "pareto", "asl/sweeps/pareto"
    config = tmp_path / "sweep.json"
    config.write_text('{"epochs": 2}')
    command = [
        sys.executable,
        "-m",
        "platform.tune",
        *SMOKE,
        "--config",
        str(config),
        "--pareto",
        "val/acc:max,train_s:min",
        "--save-tier",
        "pareto",
        "--storage",
        str(storage),
        "--name",
        name,
    ]
    # Tune saves its experiment state at most this often: the kill must come after a save.
    env = {**os.environ, **TEST_ENV, "RAY_ADDRESS": ray_address, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    driver = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    finished: list[str] = []
    while not finished and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.5)
        written = storage.read(f"{sweep_at}/results.csv")
        if written:
            table = pd.read_csv(io.BytesIO(written), dtype={"trial_id": str})
            completed = table.loc[table["status"] == "completed", "trial_id"]
            # Finished: its run directory written to the end, which its last epoch's result precedes.
            finished = [trial for trial in completed if storage.read(f"{sweep_at}/trials/{trial}/trial_done.json")]
    assert finished and driver.poll() is None, "no trial finished before the driver ended"
    time.sleep(3)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    marks = {trial: storage.modified(f"{sweep_at}/trials/{trial}/trial_done.json") for trial in finished}
    config.write_text('{"epochs": 5}')  # the resumed sweep trains with the values it started with
    if storage.is_uri:  # resumed as on another machine: from the bucket alone, its cache elsewhere
        monkeypatch.setenv("RAYPLATFORM_CACHE", str(tmp_path / "another-machine"))

    resumed = run_command("tune", "asl", "--storage", str(storage), "--name", name, "--resume", address=ray_address)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming" in resumed.stdout
    sweep_dir = storage.files("asl", "sweeps/pareto")
    results = pd.read_csv(sweep_dir / "results.csv", dtype={"trial_id": str})
    assert len(results) == 3 and results["trial_id"].is_unique and (results["epochs_max"] == 2).all()
    for trial, mark in marks.items():  # not trained again: its done-mark is the first run's
        assert storage.modified(f"{sweep_at}/trials/{trial}/trial_done.json") == mark
        assert f"trial {trial} started" not in resumed.stdout
    _front_is_non_dominated(results)
    best = json.loads((sweep_dir / "best.json").read_text())
    assert set(best["pareto_front"]) == set(results.loc[results["pareto"], "trial_id"])
    # Saved only when the best trial beats the smoke tier's own config on val/acc; else no file.
    own = results.loc[results["tier_default"], "val/acc"].tolist()
    assert len(own) == 1 and best["tier_default_objective"] == own[0]
    beats = best["objectives"]["val/acc:max"] > own[0] and not best["tier_default"]
    assert (storage.read("asl/tiers/pareto.json") is not None) == beats == (best["saved_tier"] is not None)
    assert ("tier 'pareto' not saved" in resumed.stdout) != beats, resumed.stdout[-2000:]
    assert (sweep_dir / "pareto.png").read_bytes()[:8] == PNG
    # Resumed once more, a finished sweep does nothing: it would save its tier over a newer sweep's.
    tiers = storage.read("asl/tiers/pareto.json")
    again = run_command("tune", "asl", "--storage", str(storage), "--name", name, "--resume", address=ray_address)
    assert again.returncode == 0 and "has finished: nothing to resume" in again.stdout, again.stderr[-2000:]
    assert storage.read("asl/tiers/pareto.json") == tiers and "Ray dashboard" not in again.stdout


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
        (["--tiers", "smoke,fast", "--trials", "1"], "error: --trials 1 is fewer than the 2 tiers"),
        (["--config", "no-such-file.yaml"], "error: --config no-such-file.yaml: cannot read it"),
    ],
)
def test_bad_arguments_end_with_one_error_line(args, message, tmp_path):
    tiers = [] if "--resume" in args else ["--tiers", "smoke"]  # a resumed sweep keeps its tiers
    result = run_command("tune", "asl", *tiers, *args, "--storage", str(tmp_path), "--dry-run")
    assert result.returncode == 2, result.stderr[-2000:]
    assert last_line(result.stderr).startswith(message), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_a_config_file_applies_to_every_tier_and_its_errors_name_it(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text("epochs: 3\nbatch_size: 8\n")
    result = run_command(
        "tune", "asl", "--tiers", "smoke,fast", "--trials", "4", "--config", str(config), "--dry-run", "--storage", str(tmp_path / "runs")
    )
    assert result.returncode == 0, result.stderr
    assert "tier smoke: " in result.stdout and "tier fast: " in result.stdout
    assert result.stdout.count(" 3 epochs x ") == 2, result.stdout  # not the tiers' 2 and 10
    assert "first 2 trial(s): each tier's own configuration (smoke, fast)" in result.stdout
    config.write_text("epochs: 3\nwidth: 8\n")
    result = run_command("tune", "asl", "--tiers", "smoke", "--config", str(config), "--dry-run", "--storage", str(tmp_path))
    assert result.returncode == 2 and last_line(result.stderr).startswith(f"error: unknown config key 'width' in --config {config}"), (
        result.stderr[-2000:]
    )


def test_a_space_fixed_by_set_leaves_nothing_to_search(tmp_path):
    from search_spaces import asl

    fixed = [arg for key in asl.SPACE for arg in ("--set", f"{key}={_a_value(asl.SPACE[key])}")]
    result = run_command("tune", "asl", "--tiers", "smoke", *fixed, "--storage", str(tmp_path), "--dry-run")
    assert result.returncode == 2 and last_line(result.stderr).startswith("error: nothing to search")


def _a_value(distribution) -> str:
    return str(distribution.args[0][0] if distribution.name == "choice" else distribution.args[0])


# ---------------------------------------------------------------- pure logic, without Ray


def _tier_configs(tiers, config_values=None):
    from platform import registry

    return {t: registry.resolve("asl", t, [], trial=config_values) for t in tiers}


_NO_OPTIONS = {"sets": [], "data_dir": "", "storage": ".", "config_values": {}}


def test_each_tier_s_own_configuration_is_suggested_first_and_trains_the_tier_exactly():
    from ray.tune.search.optuna import OptunaSearch

    from platform import config as config_lib
    from platform import registry
    from platform.tune import space as sweep_space
    from platform.tune import trial as sweep_trial
    from search_spaces import asl

    tiers = ["smoke", "fast"]
    space = sweep_space.searched_space(asl, registry.load("asl").Config, [])
    points = sweep_space.tier_default_points(tiers, space, _tier_configs(tiers))
    searcher = OptunaSearch(space=sweep_space.DefineByRun(tiers, space, points), metric="val/acc", mode="max", points_to_evaluate=points)
    suggested = [searcher.suggest(f"trial{i}") for i in range(4)]
    assert [s["tier"] for s in suggested[:2]] == tiers and all(s["tier_default"] for s in suggested[:2])
    assert not any(s.get("tier_default") for s in suggested[2:])
    # Optuna records the tier's own values (it learns from them), but not smoke's dim=32, outside the space.
    assert suggested[1]["lr"] == asl.TIERS["fast"]["lr"] and suggested[1]["dim"] == 96 and "dim" not in suggested[0]
    for tier, params in zip(tiers, suggested):
        cfg, trained_tier = sweep_trial.trial_config("asl", params, **_NO_OPTIONS, tiers=tiers)
        assert trained_tier == tier and config_lib.to_dict(cfg) == config_lib.to_dict(_tier_configs([tier])[tier])
    sampled, _tier = sweep_trial.trial_config("asl", suggested[2], **_NO_OPTIONS, tiers=tiers)
    assert sampled.lr == suggested[2]["lr"] != asl.TIERS[suggested[2]["tier"]]["lr"]


def test_config_file_values_come_after_the_tier_and_before_the_sampled_values():
    from platform.tune import trial as sweep_trial

    config_values = {"epochs": 3, "lr": 1e-5, "label_smoothing": 0.1}
    own, _ = sweep_trial.trial_config(
        "asl",
        {"tier": "smoke", "tier_default": True, "lr": 2e-3},
        tiers=["smoke"],
        sets=["label_smoothing=0.0"],
        data_dir="",
        storage=".",
        config_values=config_values,
    )
    assert (own.epochs, own.lr, own.label_smoothing, own.dim) == (3, 1e-5, 0.0, 32)  # --set last
    sampled, _ = sweep_trial.trial_config(
        "asl", {"tier": "smoke", "lr": 5e-4}, tiers=["smoke"], sets=[], data_dir="", storage=".", config_values=config_values
    )
    assert (sampled.epochs, sampled.lr) == (3, 5e-4)


def _trials(*configs):
    from ray.tune.experiment import Trial

    return [Trial("run_trial", config=config, stub=True) for config in configs]


def test_asha_judges_a_trial_halfway_through_its_own_tier_against_that_tier_only(tmp_path):
    from platform.tune.location import SweepLocation
    from platform.tune.results import RecordingASHA

    scheduler = RecordingASHA(SweepLocation(tmp_path), metric="val/acc", mode="max")
    own, poor, short_a, short_b = _trials(
        {"tier": "fast", "tier_default": True}, {"tier": "fast", "lr": 1e-4}, {"tier": "smoke", "lr": 1e-3}, {"tier": "smoke", "lr": 2e-3}
    )
    for trial in (own, poor, short_a, short_b):
        scheduler.on_trial_add(None, trial)
    # A 2-epoch tier is judged after its first epoch, among its own trials only.
    assert scheduler.on_trial_result(None, short_a, {"epoch": 1, "epochs_max": 2, "val/acc": 0.9}) == "CONTINUE"
    assert scheduler.on_trial_result(None, short_b, {"epoch": 1, "epochs_max": 2, "val/acc": 0.5}) == "STOP"
    # The 10-epoch tier: no cut before epoch 5, however far behind (learning may start late).
    for epoch in range(1, 5):
        assert scheduler.on_trial_result(None, own, {"epoch": epoch, "epochs_max": 10, "val/acc": 0.5}) == "CONTINUE"
        assert scheduler.on_trial_result(None, poor, {"epoch": epoch, "epochs_max": 10, "val/acc": 0.1}) == "CONTINUE"
    assert scheduler.on_trial_result(None, own, {"epoch": 5, "epochs_max": 10, "val/acc": 0.5}) == "CONTINUE"
    assert scheduler.on_trial_result(None, poor, {"epoch": 5, "epochs_max": 10, "val/acc": 0.2}) == "STOP"
    assert set(json.loads((tmp_path / "asha_stopped.json").read_text())) == {short_b.trial_id, poor.trial_id}


def test_asha_never_stops_a_tier_s_own_configuration(tmp_path):
    from platform.tune.location import SweepLocation
    from platform.tune.results import RecordingASHA

    scheduler = RecordingASHA(SweepLocation(tmp_path), metric="val/acc", mode="max")
    good, own, poor = _trials({"tier": "fast", "lr": 1e-3}, {"tier": "fast", "tier_default": True}, {"tier": "fast", "lr": 3e-3})
    for trial in (good, own, poor):
        scheduler.on_trial_add(None, trial)

    def report(trial, value):  # epoch 5 of 10, as Tune passes it (with its own iteration count)
        return scheduler.on_trial_result(None, trial, {"epoch": 5, "epochs_max": 10, "training_iteration": 5, "val/acc": value})

    assert report(good, 0.9) == "CONTINUE" and report(own, 0.1) == "CONTINUE"
    # Its value still counts at the rung: the bar (the median of 0.9 and 0.1) stops a 0.3.
    assert report(poor, 0.3) == "STOP"
    assert json.loads((tmp_path / "asha_stopped.json").read_text()) == [poor.trial_id]


def _frame(rows):
    columns = ["trial_id", "tier", "tier_default", "status", "val/acc"]
    return pd.DataFrame([dict(zip(columns, row)) for row in rows])


@pytest.mark.parametrize(
    ("rows", "saved", "line"),
    [
        # The sweep: the best sampled trial (0.526) is below the fast tier's own config (0.597).
        (
            [("a", "fast", True, "completed", 0.597), ("b", "fast", False, "completed", 0.526), ("c", "smoke", True, "completed", 0.30)],
            False,
            "no trial beat the fast tier's own config (val/acc 0.597)",
        ),
        (
            [("a", "fast", True, "completed", 0.597), ("b", "fast", False, "completed", 0.597)],
            False,
            "no trial beat the fast tier's own config (val/acc 0.597)",
        ),
        (
            [
                ("a", "fast", True, "completed", 0.597),
                ("b", "fast", False, "completed", 0.65),
                ("c", "fast", False, "early-stopped (ASHA)", 0.9),
            ],
            True,
            "trial b beats the fast tier's own config: val/acc 0.65 against 0.597",
        ),
        (
            [("a", "fast", True, "stopped (time budget)", 0.2), ("b", "fast", False, "completed", 0.65)],
            False,
            "the fast tier's own config did not complete (stopped (time budget))",
        ),
    ],
)
def test_the_best_trial_is_saved_only_when_it_beats_its_own_tier_s_configuration(rows, saved, line):
    from platform.tune.best import judge
    from platform.tune.results import best_index
    from platform.tune.space import Objective

    frame = _frame(rows)
    objective = Objective("val/acc", "max")
    verdict = judge(frame, best_index(frame, [objective]), objective)
    assert verdict.save is saved and verdict.line.startswith(line), verdict.line


def test_a_loss_objective_is_judged_in_its_direction():
    from platform.tune.best import judge
    from platform.tune.space import Objective

    frame = pd.DataFrame(
        {
            "trial_id": ["a", "b"],
            "tier": ["fast", "fast"],
            "tier_default": [True, False],
            "status": ["completed", "completed"],
            "val/loss": [0.8, 0.7],
        }
    )
    assert judge(frame, 1, Objective("val/loss", "min")).save
    assert not judge(frame.assign(**{"val/loss": [0.7, 0.8]}), 1, Objective("val/loss", "min")).save
