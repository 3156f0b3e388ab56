"""A trainable of the user's, from outside the repository, with the installed console script:
``rayplatform new mytoy`` writes it once; its --help shows its tiers and keys, it trains, it is
swept, its run predicts; a misspelt hook in it is one error line naming its file, before any work.

    .venv/bin/python -m pytest tests/test_new_trainable.py

Each command runs in a temporary folder with an empty ``PYTHONPATH`` (``tests/test_installed.py``):
nothing of mytoy is importable by Ray's workers but what the platform ships them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import TEST_ENV, last_line

CONSOLE_SCRIPT = Path(sys.executable).parent / "rayplatform"
ROW = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8"  # a row of the smoke set's 8 numbers


def rayplatform(folder: Path, *args: str, address: str | None = None) -> subprocess.CompletedProcess:
    """The console script in ``folder``: a Ray of its own, or the one at ``address`` (whose workers never saw mytoy)."""
    env = {key: value for key, value in {**os.environ, **TEST_ENV}.items() if key not in ("PYTHONPATH", "RAY_ADDRESS")}
    env.update({"RAY_ADDRESS": address} if address else {})
    return subprocess.run([str(CONSOLE_SCRIPT), *args], cwd=folder, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A folder outside the repository holding ``mytoy/``, as ``rayplatform new mytoy`` wrote it."""
    where = tmp_path_factory.mktemp("mine")
    made = rayplatform(where, "new", "mytoy")
    assert made.returncode == 0 and (where / "mytoy" / "space.py").is_file(), made.stderr
    return where


@pytest.fixture(scope="module")
def trained(folder, ray_address) -> Path:
    """``rayplatform run ./mytoy --tier smoke`` on the shared Ray: its run directory."""
    shown = rayplatform(folder, "run", "./mytoy", "--help")
    assert "tiers of mytoy" in shown.stdout and "  hidden = 64" in shown.stdout, shown.stderr
    result = rayplatform(folder, "run", "./mytoy", "--tier", "smoke", "--storage", "runs", "--name", "first", address=ray_address)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[mytoy] finished: 2 epochs" in result.stdout
    return folder / "runs" / "mytoy" / "first"


def test_a_new_trainable_trains_from_its_folder_and_its_run_predicts(folder, trained):
    manifest = json.loads((trained / "manifest.json").read_text())
    assert (manifest["stem"], manifest["trainable"]) == ("mytoy", str(folder / "mytoy"))
    predicted = rayplatform(folder, "predict", str(trained), ROW, "--json")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert json.loads(last_line(predicted.stdout))["top"][0]["label"].startswith("class")


def test_a_sweep_of_it_gives_a_trial_two_workers_and_the_run_directory_a_run_has(folder, trained, ray_address):
    """A sweep's trial is a run assembled as ``platform.run`` assembles one, on the sweep's launch,
    in Ray processes that never saw mytoy but for what the platform ships them."""
    command = ("tune", "./mytoy", "--tiers", "smoke", "--trials", "1", "--workers-per-trial", "2", "--storage", "runs")
    swept = rayplatform(folder, *command, "--name", "two-workers", address=ray_address)
    assert swept.returncode == 0, (swept.stdout + swept.stderr)[-4000:]
    sweep_dir = folder / "runs" / "mytoy" / "sweeps" / "two-workers"
    assert json.loads((sweep_dir / "sweep.json").read_text())["stem"] == "mytoy"
    (trial,) = pd.read_csv(sweep_dir / "results.csv", dtype={"trial_id": str}).itertuples()
    assert trial.status == "completed", trial
    trial_dir = sweep_dir / "trials" / trial.trial_id
    assert _files(trial_dir) - {"trial_done.json"} == _files(trained) and any((trial_dir / "tensorboard").glob("events.out.tfevents.*"))
    manifest = json.loads((trial_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["launch"]["workers"] == 2 and not manifest["launch"]["gpu"]
    assert manifest["sweep"]["dir"] == str(sweep_dir) and manifest["training"]["epochs_completed"] == 2
    assert len(pd.read_csv(trial_dir / "history.csv")) == 2  # each epoch's samples split between the two workers


def _files(run_dir: Path) -> set[str]:
    """The files of a finished run directory a user reads, by name: not its checkpoint folders (a sweep
    keeps its best trials'), nor the hidden ones (a run's claim of its name, a trial's timings)."""
    return {path.name for path in run_dir.iterdir() if path.is_file() and not path.name.startswith(".")}


def test_a_misspelt_hook_in_it_is_one_error_naming_its_file_before_any_work(folder, tmp_path):
    copy = shutil.copytree(folder / "mytoy", tmp_path / "mytoy")
    init = copy / "__init__.py"
    init.write_text(init.read_text() + "\n\ndef epoch_shedule(epoch, cfg):\n    return {}\n")
    misspelt = rayplatform(tmp_path, "run", "./mytoy", "--tier", "smoke", "--storage", "runs")
    assert misspelt.returncode == 2
    assert last_line(misspelt.stderr) == (
        f"error: mytoy ({init}) defines epoch_shedule: did you mean epoch_schedule? "
        "(optional names: on_epoch_start, epoch_schedule, train_filter, "
        "add_predict_arguments, run_warnings, baseline, PREPROCESS_KEYS)"
    )
    assert not (tmp_path / "runs").exists()
