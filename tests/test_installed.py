"""Installed use: the ``rayplatform`` console script and the notebook API, from another folder.

    .venv/bin/python -m pytest tests/test_installed.py

Each command runs in a fresh interpreter whose working directory is a temporary folder and whose
``PYTHONPATH`` is empty, so only the installed package can make ``platform`` the project's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, TEST_ENV, last_line

CONSOLE_SCRIPT = Path(sys.executable).parent / "rayplatform"


def elsewhere(command: list[str], folder: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {
        key: value for key, value in {**os.environ, **TEST_ENV}.items() if key not in ("PYTHONPATH", "RAY_ADDRESS")
    }  # a Ray of its own: its workers prove the path too
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    if not CONSOLE_SCRIPT.is_file():
        pytest.fail(f"{CONSOLE_SCRIPT} is missing: the project is not installed with its scripts (make setup)")
    return tmp_path_factory.mktemp("elsewhere")


NOTEBOOK = """
import json
import platform                      # a kernel has often imported the standard module already
assert not hasattr(platform, "__path__")
import rayplatform
import platform as package
assert hasattr(package, "__path__") and package.system() == "Linux"
from platform.data.cache import cache_root
run = rayplatform.train("asl", tier="smoke", sets={"epochs": 1, "lr": 0.003}, storage="runs", name="notebook")
again = rayplatform.Run(run.path)
sequence = next(cache_root().glob("asl/**/train_landmark_files/*/*.parquet"))
print(json.dumps({"status": again.manifest["status"], "epochs": len(again.history), "lr": again.config.lr,
                  "root": str(rayplatform.ROOT), "top": again.predict([sequence])[0]["top"][0]["label"]}))
"""


@pytest.fixture(scope="module")
def notebook_run(folder) -> tuple[Path, dict]:
    result = elsewhere([sys.executable, "-c", NOTEBOOK], folder, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return folder / "runs" / "asl" / "notebook", json.loads(last_line(result.stdout))


def test_a_notebook_that_imported_the_standard_platform_trains_and_loads_a_run(notebook_run):
    run_dir, shown = notebook_run
    assert {**shown, "top": None} == {"status": "finished", "epochs": 1, "lr": 0.003, "root": str(REPO), "top": None}
    assert shown["top"].startswith("sign")
    assert (run_dir / "best_model.pt").is_file()


def test_the_console_script_predicts_and_monitors_from_any_folder(folder, notebook_run):
    run_dir, _shown = notebook_run
    cache = Path(os.environ["RAYPLATFORM_CACHE"])
    sequence = next(cache.glob("asl/**/train_landmark_files/*/*.parquet"))
    predicted = elsewhere([str(CONSOLE_SCRIPT), "predict", str(run_dir), str(sequence), "--json"], folder)
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(last_line(predicted.stdout))["top"][0]["label"].startswith("sign")
    monitored = elsewhere([str(CONSOLE_SCRIPT), "monitor", str(run_dir)], folder)
    assert monitored.returncode == 0 and "notebook" in monitored.stdout, monitored.stderr


def test_the_console_script_answers_version_help_and_bad_commands_without_ray(folder):
    version = elsewhere([str(CONSOLE_SCRIPT), "--version"], folder)
    assert version.returncode == 0 and version.stdout.startswith("rayplatform ")
    printed = elsewhere([str(CONSOLE_SCRIPT), "run", "asl", "--tier", "smoke", "--print-config"], folder)
    assert printed.returncode == 0 and "max_len: 32" in printed.stdout, printed.stderr
    unknown = elsewhere([str(CONSOLE_SCRIPT), "train", "asl"], folder)
    assert (
        unknown.returncode == 2
        and unknown.stderr.strip() == "error: unknown command 'train'; known: run, tune, label, predict, monitor, new"
    )
    bad = elsewhere([str(CONSOLE_SCRIPT), "run", "asl", "--set", "epochs=0"], folder)
    assert bad.returncode == 2 and last_line(bad.stderr) == "error: config key 'epochs' must be >= 1, not 0"


def test_the_readme_names_the_extra_that_installs_the_tensorboard_viewer():
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("tensorboard") for d in extras["viewer"])
    assert "pip install -e '.[viewer]'" in (REPO / "README.md").read_text()
