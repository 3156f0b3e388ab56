"""``--resume`` after a crash tore or lost the run directory's own files (config, meta, manifest),
before any checkpoint: one line that says how to start again. With checkpoints the run continues
from what they hold: ``tests/test_run.py::test_a_killed_driver_continues_with_resume``.

.venv/bin/python -m pytest tests/test_resume_files.py
"""

from __future__ import annotations

from helpers import last_line, run_command

from platform.runs import run_files


def test_a_run_with_a_torn_config_and_no_checkpoint_says_how_to_start_again(tmp_path):
    run_dir = tmp_path / "asl" / "early"
    run_dir.mkdir(parents=True)
    (run_dir / run_files.CONFIG_FILE).write_text('{"seed": ')
    (run_dir / run_files.MANIFEST_FILE).write_text('{"stem": "asl", "status": "running"}')
    result = run_command("run", "asl", "--storage", str(tmp_path), "--name", "early", "--resume")
    assert result.returncode == 2
    line = last_line(result.stderr)
    assert line.startswith(f"error: cannot resume {run_dir}") and "no checkpoint" in line and "another --name" in line
    assert "Ray dashboard" not in result.stdout


def test_nothing_to_resume_is_one_line(tmp_path):
    result = run_command("run", "asl", "--storage", str(tmp_path), "--name", "never", "--resume")
    assert result.returncode == 2 and last_line(result.stderr) == f"error: nothing to resume at {tmp_path / 'asl' / 'never'}"
