"""What every benchmark shares: its --small/--full switch, timed subprocesses, the machine, the summary.

Imported by ``python -m bench.<name>``; not a benchmark itself.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Ray Data's bars and per-execution logs would flood the captured output; they cost nothing measured.
QUIET_ENV = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_DATA_LOG_LEVEL": "WARNING"}


def parse_setting(doc: str, extra: list[tuple[str, dict]] = ()) -> argparse.Namespace:
    """``--small`` (the default, about a minute) or ``--full``; ``args.full`` says which."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--small", action="store_true", help="the quick check (default)")
    size.add_argument("--full", action="store_true", help="the setting the README's figures come from")
    for flag, options in extra:
        parser.add_argument(flag, **options)
    return parser.parse_args()


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a ``python -m platform.*`` child: a fresh local Ray of its own (no
    RAY_ADDRESS inherited from this process), the repo first on PYTHONPATH for its workers."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(QUIET_ENV, PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)), **extra)
    return env


@dataclass
class TimedRun:
    returncode: int
    lines: list[tuple[float, str]]
    """Each output line with the seconds since the command started when it arrived."""

    def first(self, prefix: str) -> float | None:
        """Seconds at which the first line containing ``prefix`` arrived."""
        return next((t for t, line in self.lines if prefix in line), None)

    def tail(self, count: int = 15) -> str:
        return "\n".join(line for _, line in self.lines[-count:])


def run_timed(args: list[str], env: dict[str, str], timeout: float) -> TimedRun:
    """``python args...`` from the repo root, stamping each stdout/stderr line as it arrives;
    killed (and reported as failed) after ``timeout`` seconds."""
    started = time.monotonic()
    with subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=env,
        text=True,
        bufsize=1,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    ) as process:
        # The whole process group: a killed driver must not leave its local Ray behind.
        watchdog = threading.Timer(timeout, os.killpg, (process.pid, signal.SIGKILL))
        watchdog.start()
        try:
            lines = [(time.monotonic() - started, line.rstrip("\n")) for line in process.stdout]
            process.wait()
        finally:
            watchdog.cancel()
    return TimedRun(process.returncode, lines)


def require_success(run: TimedRun, what: str) -> None:
    if run.returncode != 0:
        raise SystemExit(f"{what} failed (exit {run.returncode}):\n{run.tail()}")


def machine() -> str:
    """One line: date, cores, memory, CPU model and the load the figures were taken under."""
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        "unknown CPU",
    )
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{now}; {os.cpu_count()} cores, {memory_gb:.0f} GiB, {model}; load average {load}"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_summary(title: str, rows: list[tuple[str, str]], notes: list[str] = (), headline: dict | None = None) -> None:
    """The readable block, then ``headline`` as the output's last line: one JSON object."""
    width = max(len(label) for label, _ in rows)
    print(f"\n== {title} ==")
    print(f"machine: {machine()}")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    for note in notes:
        print(f"  note: {note}")
    if headline is not None:
        print(json.dumps(headline))
    sys.stdout.flush()
