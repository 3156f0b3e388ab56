"""The floor under any Ray Train command: a one-worker ``TorchTrainer`` whose function does nothing.

    .venv/bin/python -m bench.bare_trainer     # run by bench.startup, as its third arm

Prints a line as each stage ends, as ``bench/plain_loop.py`` does: imports (torch and Ray Train),
Ray start (a local Ray of its own, as ``platform.run`` starts one), and "first step" from inside
the worker when the train function starts (it arrives through Ray's log forwarding, as the
platform's epoch lines do); then the fit returns. The last line is one JSON object of the seconds at
which its own stages ended.
"""

from __future__ import annotations

import json
import tempfile
import time

STARTED = time.monotonic()

import ray  # noqa: E402 - the imports are what is timed
import ray.train  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402

ENDS: dict[str, float] = {}


def say(stage: str) -> None:
    ENDS[f"{stage}_s"] = round(time.monotonic() - STARTED, 2)
    print(f"stage {stage} {ENDS[f'{stage}_s']:.2f}", flush=True)


def train_function(_config: dict) -> None:
    print("stage first_step", flush=True)
    ray.train.report({"step": 1})


def main() -> int:
    say("imports")
    ray.init(num_cpus=2, include_dashboard=True, logging_level="ERROR")
    say("ray_start")
    with tempfile.TemporaryDirectory(prefix="bench-bare-") as storage:
        TorchTrainer(
            train_function,
            scaling_config=ray.train.ScalingConfig(num_workers=1),
            run_config=ray.train.RunConfig(name="bare", storage_path=storage),
        ).fit()
    say("fit_returned")
    ray.shutdown()
    print(json.dumps(ENDS), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
