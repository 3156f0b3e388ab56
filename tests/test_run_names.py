"""Run names and run folders when several commands start at once: each run claims its folder
before anything is written, a taken name is refused whatever the timing, a run that never started
gives its name back, and a run being trained cannot be resumed by a second process.

.venv/bin/python -m pytest tests/test_run_names.py
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from helpers import TEST_ENV, last_line, run_command

from platform.launching import Launch
from platform.runs import opening, run_files

CONSOLE_SCRIPT = Path(sys.executable).parent / "rayplatform"


def _claim_as_a_command_does(folder: Path) -> int | None:
    """This machine's lock on the run, then the claim (``platform.run``'s order): the lock held, or None."""
    held = run_files.hold(str(folder))
    if held is not None and run_files.claim(folder):
        return held
    run_files.let_go(held)
    return None


def _claim_after(barrier, folder: str, results) -> None:
    barrier.wait()
    results.append(_claim_as_a_command_does(Path(folder)) is not None)
    barrier.wait()  # every command is still alive when the others try


def test_of_eight_processes_claiming_one_run_folder_at_once_exactly_one_wins(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(8), context.Manager().list()
    workers = [context.Process(target=_claim_after, args=(barrier, str(tmp_path / "asl" / "same"), results)) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(results) == [False] * 7 + [True]


def test_a_folder_holding_a_run_from_before_claims_is_never_claimed(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / run_files.CONFIG_FILE).write_text("{}")
    assert _claim_as_a_command_does(tmp_path / "old") is None
    held = _claim_as_a_command_does(tmp_path / "empty-folder-left-by-hand")
    assert held is not None and _claim_as_a_command_does(tmp_path / "empty-folder-left-by-hand") is None
    run_files.let_go(held)


def test_default_names_carry_the_time_and_a_random_suffix_and_a_taken_one_is_drawn_again(tmp_path, monkeypatch):
    name = run_files.default_name("smoke")
    assert name.startswith("smoke-") and len(name.split("-")) == 4 and len(name.split("-")[-1]) == 6
    names = iter(["smoke-20261207-120000-aaaaaa", "smoke-20261207-120000-aaaaaa", "smoke-20261207-120000-bbbbbb"])
    monkeypatch.setattr(run_files, "default_name", lambda prefix: next(names))
    launch = Launch(storage=str(tmp_path))
    first, _held = opening.claim_new_run(launch, "asl", "smoke")
    second, _held = opening.claim_new_run(launch, "asl", "smoke")
    assert (first.name, second.name) == ("smoke-20261207-120000-aaaaaa", "smoke-20261207-120000-bbbbbb")


def test_an_explicit_name_that_another_command_claimed_is_refused_before_ray(tmp_path):
    held = _claim_as_a_command_does(tmp_path / "asl" / "mine")  # another command got there first, and lives
    try:
        result = run_command("run", "asl", "--tier", "smoke", "--storage", str(tmp_path), "--name", "mine")
    finally:
        run_files.let_go(held)
    assert result.returncode == 2 and "already exists" in last_line(result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and "Ray dashboard" not in result.stdout


def _claim_left(folder: Path, host: str) -> None:
    """What a command SIGKILLed between claiming its name and writing its config leaves."""
    folder.mkdir(parents=True)
    (folder / run_files.CLAIM_FILE).write_text(json.dumps({"pid": 2**22 + 1, "host": host, "claimed": "2026-12-07T10:00:00+00:00"}))


def test_a_name_whose_command_was_killed_before_it_started_is_free_again(tmp_path):
    _claim_left(tmp_path / "asl" / "victim", os.uname().nodename)
    resumed = run_command("run", "asl", "--storage", str(tmp_path), "--name", "victim", "--resume")
    assert resumed.returncode == 2 and last_line(resumed.stderr) == (
        f"error: nothing to resume at {tmp_path / 'asl' / 'victim'} (a command claimed it at 2026-12-07T10:00:00+00:00 "
        "and was gone before it wrote the run's config: start it again under that --name)"
    )
    location, held = opening.claim_new_run(Launch(storage=str(tmp_path), name="victim"), "asl", "smoke")
    run_files.let_go(held)
    assert run_files.claimed_by(location.local)["pid"] == os.getpid()


def test_a_name_another_machine_claimed_is_refused_saying_how_to_free_it(tmp_path):
    _claim_left(tmp_path / "asl" / "theirs", "another-host")
    result = run_command("run", "asl", "--tier", "smoke", "--storage", str(tmp_path), "--name", "theirs")
    assert result.returncode == 2 and last_line(result.stderr) == (
        f"error: run {tmp_path / 'asl' / 'theirs'} is being started by another command (pid {2**22 + 1} on another-host since "
        f"2026-12-07T10:00:00+00:00): pass another --name, or, if that command is gone, delete its {run_files.CLAIM_FILE}"
    )


def test_a_run_refused_after_its_claim_gives_its_name_back(ray_address, tmp_path):
    command = ["asl", "--tier", "smoke", "--storage", str(tmp_path), "--name", "again", "--workers", "99"]
    refused = run_command("run", *command, address=ray_address)
    assert refused.returncode == 2 and "needs 99 CPUs" in last_line(refused.stderr)
    assert not (tmp_path / "asl" / "again").exists()
    # The name is free for the corrected command (here only up to its own check of the name).
    held = _claim_as_a_command_does(tmp_path / "asl" / "again")
    assert held is not None
    run_files.let_go(held)


def test_a_run_being_trained_is_not_resumed_by_a_second_process(tmp_path):
    run_dir = tmp_path / "asl" / "busy"
    printed = run_command("run", "asl", "--tier", "smoke", "--print-config")
    run_dir.mkdir(parents=True)
    (run_dir / run_files.CONFIG_FILE).write_text(json.dumps(_yaml_values(printed.stdout)))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    held = run_files.hold(str(run_dir))  # this test process is "the driver training it"
    try:
        result = run_command("run", "asl", "--storage", str(tmp_path), "--name", "busy", "--resume")
    finally:
        run_files.let_go(held)
    assert result.returncode == 2 and "being trained by another process" in last_line(result.stderr)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def _yaml_values(printed: str) -> dict:
    import yaml

    return yaml.safe_load(printed)


def test_two_runs_started_together_without_names_keep_their_own_folders(ray_address, tmp_path):
    """From outside, as the issue found it: ``for s in 1 2; do rayplatform run asl --set seed=$s & done``."""
    env = {**os.environ, **TEST_ENV, "RAY_ADDRESS": ray_address}
    command = [str(CONSOLE_SCRIPT), "run", "asl", "--tier", "smoke", "--set", "epochs=1", "--storage", str(tmp_path)]
    drivers = [
        subprocess.Popen([*command, "--set", f"seed={seed}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for seed in (1, 2)
    ]
    outputs = [driver.communicate(timeout=600)[0] for driver in drivers]
    assert [driver.returncode for driver in drivers] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    run_dirs = sorted((tmp_path / "asl").iterdir())
    assert len(run_dirs) == 2, run_dirs
    seeds = sorted(json.loads((run_dir / run_files.CONFIG_FILE).read_text())["seed"] for run_dir in run_dirs)
    assert seeds == [1, 2]
    histories = [pd.read_csv(run_dir / run_files.HISTORY_FILE) for run_dir in run_dirs]
    assert all(len(history) == 1 for history in histories)
    assert not histories[0]["train/loss"].equals(histories[1]["train/loss"])  # two seeds, two runs
    for run_dir in run_dirs:
        manifest = json.loads((run_dir / run_files.MANIFEST_FILE).read_text())
        assert manifest["status"] == "finished" and manifest["name"] == run_dir.name
        assert manifest["config"]["seed"] == json.loads((run_dir / run_files.CONFIG_FILE).read_text())["seed"]


def test_a_store_that_cannot_be_written_is_one_line_before_ray(tmp_path):
    store = "/proc/no-store-here"  # root writes anywhere else; a missing bucket: test_storage_claims.py
    result = run_command("run", "asl", "--tier", "smoke", "--storage", str(tmp_path), "--store", store)
    assert result.returncode == 2 and last_line(result.stderr).startswith(f"error: --store {store}")
    assert len(result.stderr.strip().splitlines()) == 1 and "Ray dashboard" not in result.stdout
    assert not (tmp_path / "asl").exists() or not any((tmp_path / "asl").iterdir())
