"""The sweep's trial table: one row a trial (tier, sampled values, epoch, metric, state).

Printed by ``python -m platform.tune asl --tiers smoke,fast`` (``SweepCallback`` in
``platform/tune/results.py``) instead of every Train worker's epoch lines, which trials running
side by side would interleave, unnamed, and Ray would fold into "[repeated 2x across cluster]".
A table is printed when a trial starts, as results come in (at most every ``EVERY_S`` seconds)
and once the sweep ends.
"""

from __future__ import annotations

import time
from typing import Any

from platform.tune.space import TIER_DEFAULT

EVERY_S = 15.0


class TrialTable:
    def __init__(self, metric: str):
        self.metric = metric
        self.latest: dict[str, dict] = {}  # trial id -> its last reported result
        self.shown_at = 0.0

    def due(self, trial: Any, result: dict) -> bool:
        """Note a trial's report; whether the table is due again."""
        self.latest[trial.trial_id] = result
        return time.monotonic() - self.shown_at >= EVERY_S

    def render(self, trials: list) -> str:
        self.shown_at = time.monotonic()
        rows = [("trial", "state", "tier", "params", "epoch", self.metric)]
        for trial in trials:
            result = self.latest.get(trial.trial_id, {})
            params = (
                "(the tier's own config)"
                if trial.config.get(TIER_DEFAULT)
                else "  ".join(f"{k}={short(v)}" for k, v in trial.config.items() if k != "tier")
            )
            value = result.get(self.metric)
            rows.append(
                (
                    trial.trial_id,
                    trial.status,
                    str(trial.config.get("tier", "")),
                    params,
                    str(result.get("epoch", "")),
                    "" if value is None else short(value),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        return "\n".join(["[sweep] " + lines[0], *("        " + line for line in lines[1:])])


def short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
