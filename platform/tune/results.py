"""The sweep's table as it runs: each trial's config, metrics, time, status and why it stopped.

Written by ``python -m platform.tune asl ...`` to ``<storage>/asl/sweeps/<name>/results.csv`` after
every finished trial (so a long sweep can be read while it runs) and at the end. The same Tune
callback removes the checkpoints of trials that lost: only the best ``--keep-best`` trials keep theirs.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from platform.errors import find_user_error
from platform.runs import artifacts
from platform.runs.storage import RunLocation
from platform.train import checkpoints
from platform.tune.location import ASHA_FILE, RESULTS_FILE, SweepLocation
from platform.tune.space import TIER_DEFAULT, Objective
from platform.tune.table import TrialTable, short
from platform.tune.trial import DONE_FILE

COMPLETED, ASHA, ERROR, BUDGET, STOPPED, NOT_RUN = (
    "completed",
    "early-stopped (ASHA)",
    "error",
    "stopped (time budget)",
    "stopped",
    "not finished",
)


def _read_ids(path: Path) -> set[str]:
    return set(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else set()


# ASHA judges a trial first when it has trained this share of its own tier's epochs, and keeps
# the better half there (reduction factor 2). Why half: tiers compress their learning-rate
# schedule into their epochs, so a trial's first half runs at a high rate where the order of
# configurations is still noise, and on a small real set learning may only start midway (issue
# #18: ASL's fast tier started learning around epoch 5 of 10, and a cut after epoch 1 stopped
# trials before they learned). Judging at half costs at most half of a poor trial.
FIRST_RUNG = 0.5
REDUCTION_FACTOR = 2
PROGRESS = "progress"  # the share of its own epochs a trial has trained: ASHA's time


class RecordingASHA(FIFOScheduler):
    """ASHA with one bracket a tier, on the share of each trial's own epochs done.

    A trial competes only with trials of its own tier (same data, model size and schedule length),
    at the same point of their schedule: with mixed tiers, a 2-epoch smoke tier would otherwise
    set rungs at epoch 1 for a 10-epoch fast tier. A tier's own configuration (``tier_default``)
    sets the bar at each rung but is never stopped: the sweep's result is judged against it. It
    notes which trials it stopped: Tune reports them as TERMINATED, like trials that finished or
    ran out of time, and results.csv must say why each trial stopped.
    """

    def __init__(
        self, sweep: SweepLocation, metric: str, mode: str, first_rung: float = FIRST_RUNG, reduction_factor: float = REDUCTION_FACTOR
    ):
        super().__init__()
        self._sweep = sweep  # the record's folder is found again where a resumed sweep runs
        self._options = {
            "time_attr": PROGRESS,
            "metric": metric,
            "mode": mode,
            "max_t": 1.0,
            "grace_period": first_rung,
            "reduction_factor": reduction_factor,
        }
        self._tiers: dict[str, AsyncHyperBandScheduler] = {}

    def _of(self, trial: Trial) -> AsyncHyperBandScheduler:
        tier = str(trial.config.get("tier", ""))
        if tier not in self._tiers:
            self._tiers[tier] = AsyncHyperBandScheduler(**self._options)
        return self._tiers[tier]

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        epoch, epochs_max = result.get("epoch"), result.get("epochs_max")
        if epoch is None or not epochs_max or epoch >= epochs_max:
            # The trial's last epoch: stopping it saves nothing and would kill the trial before
            # its Train run finishes; it is ranked when it completes (on_trial_complete).
            return TrialScheduler.CONTINUE
        action = self._of(trial).on_trial_result(tune_controller, trial, {**result, PROGRESS: epoch / epochs_max})
        if action == TrialScheduler.STOP and trial.config.get(TIER_DEFAULT):
            return TrialScheduler.CONTINUE  # its value is recorded at the rung: the bar for the others
        if action == TrialScheduler.STOP:
            record = self._sweep.local / ASHA_FILE
            record.write_text(json.dumps(sorted(_read_ids(record) | {trial.trial_id})), encoding="utf-8")
        return action

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        epochs_max = (result or {}).get("epochs_max")
        shown = {**result, PROGRESS: result.get("epoch", 0) / epochs_max} if epochs_max else (result or {})
        self._of(trial).on_trial_complete(tune_controller, trial, shown)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        try:
            self._of(trial).on_trial_remove(tune_controller, trial)
        except KeyError:  # already forgotten by on_trial_complete
            pass

    def debug_string(self) -> str:
        return "\n".join(f"tier {tier}: {scheduler.debug_string()}" for tier, scheduler in self._tiers.items())


def _error_line(trial: Trial) -> str:
    try:
        error = trial.get_pickled_error() or trial.get_error()
    except Exception:  # noqa: BLE001 - the table must be written even without the error file
        return "error (no error file)"
    user_error = find_user_error(error)
    text = str(user_error if user_error is not None else error or "unknown error")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "unknown error"


def trial_row(trial: Trial, sweep: SweepLocation, asha_ids: set[str], budget: float | None) -> dict[str, Any]:
    result = trial.last_result or {}
    run = sweep.trial(trial.trial_id)
    finished = result.get("epoch", 0) >= result.get("epochs_max", math.inf) or run.exists(DONE_FILE)
    reason = ""
    if trial.status == Trial.ERROR:
        status, reason = ERROR, _error_line(trial)
    elif finished:
        status = COMPLETED
        if result.get("epoch", 0) < result.get("epochs_max", 0):
            reason = f"trainable's early stopping at epoch {result.get('epoch')}"
    elif trial.trial_id in asha_ids:
        status, reason = ASHA, f"after epoch {result.get('epoch')}"
    elif trial.status == Trial.TERMINATED:
        status = BUDGET if budget else STOPPED
    else:
        status = f"{NOT_RUN} (time budget)" if budget else NOT_RUN
    row = {
        "trial_id": trial.trial_id,
        "status": status,
        "reason": reason,
        "tier": trial.config.get("tier", ""),
        TIER_DEFAULT: bool(trial.config.get(TIER_DEFAULT)),
    }
    row.update({f"config/{k}": v for k, v in trial.config.items() if k not in ("tier", TIER_DEFAULT)})
    metrics = {k: v for k, v in result.items() if k.startswith(("val/", "train/"))}
    row.update(metrics)
    row.update(
        {
            "params": result.get("params"),
            "train_s": result.get("train_s"),
            "epoch": result.get("epoch"),
            "epochs_max": result.get("epochs_max"),
            "time_s": round(result.get("time_total_s", 0.0), 2),
            "run_dir": (run.remote or str(run.local)) if run.exists(artifacts.CONFIG_FILE) else "",
        }
    )
    return row


def table(trials: list[Trial], sweep: SweepLocation, budget: float | None) -> pd.DataFrame:
    asha_ids = _read_ids(sweep.local / ASHA_FILE)
    return pd.DataFrame([trial_row(t, sweep, asha_ids, budget) for t in trials])


def pareto_mask(frame: pd.DataFrame, objectives: list[Objective]) -> np.ndarray:
    """True for the rows no other row dominates (at least as good in all objectives, better in one).
    Only completed trials compete: a stopped trial's time and quality are not its config's."""
    signed = (
        np.column_stack(
            [pd.to_numeric(frame[o.metric], errors="coerce").to_numpy(float) * (1 if o.mode == "min" else -1) for o in objectives]
        )
        if len(frame)
        else np.zeros((0, len(objectives)))
    )
    eligible = (frame["status"] == COMPLETED).to_numpy() & ~np.isnan(signed).any(axis=1) if len(frame) else np.zeros(0, bool)
    mask = np.zeros(len(frame), dtype=bool)
    for i in np.flatnonzero(eligible):
        others = signed[eligible]
        dominated = ((others <= signed[i]).all(axis=1) & (others < signed[i]).any(axis=1)).any()
        mask[i] = not dominated
    return mask


def ranked(frame: pd.DataFrame, objectives: list[Objective]) -> list:
    """The trials' index labels, best first: completed trials by the objectives (ties: the next
    ones), then the others (stopped, errored, running) the same way; each group's trials without
    the first objective last. One order decides both the best trial and whose checkpoints stay:
    a stopped trial's score is not its config's, and it must never push the best one out."""
    if frame.empty:
        return []
    first = pd.to_numeric(frame.get(objectives[0].metric, pd.Series(np.nan, index=frame.index)), errors="coerce")
    keys = pd.DataFrame({"unfinished": frame["status"] != COMPLETED, "unscored": first.isna()}, index=frame.index)
    for position, objective in enumerate(o for o in objectives if o.metric in frame):
        keys[f"objective{position}"] = pd.to_numeric(frame[objective.metric], errors="coerce") * (1 if objective.mode == "min" else -1)
    return list(keys.sort_values(list(keys.columns), na_position="last", kind="stable").index)


def best_index(frame: pd.DataFrame, objectives: list[Objective]) -> int | None:
    """The first of ``ranked``: the best completed trial; any trial with the metric when none completed."""
    order = ranked(frame, objectives)
    if not order or objectives[0].metric not in frame or pd.isna(pd.to_numeric(frame.at[order[0], objectives[0].metric], errors="coerce")):
        return None
    return int(order[0])


class SweepCallback(Callback):
    """Progress lines, results.csv after each finished trial, and checkpoint pruning."""

    def __init__(self, sweep: SweepLocation, objectives: list[Objective], keep_best: int, budget: float | None):
        self.sweep, self.objectives, self.keep_best, self.budget = sweep, objectives, keep_best, budget
        self.table = TrialTable(objectives[0].metric)

    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info):
        shown = "  ".join(f"{k}={short(v)}" for k, v in trial.config.items() if k != TIER_DEFAULT)
        own = " (the tier's own config)" if trial.config.get(TIER_DEFAULT) else ""
        say(f"[sweep] trial {trial.trial_id} started{own}: {shown}")
        say(self.table.render(trials))

    def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict, **info):
        if self.table.due(trial, result):
            say(self.table.render(trials))

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info):
        self._finished(trials, trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info):
        self._finished(trials, trial)

    def on_experiment_end(self, trials: list, **info):
        for _, row in self.write(trials).iterrows():
            mark_manifest(self.sweep.trial(row["trial_id"]), row)  # trials the time budget stopped end here, without on_trial_complete
        say(self.table.render(trials))  # every trial in its final state

    def _finished(self, trials: list, trial: Trial) -> None:
        frame = self.write(trials)
        row = frame[frame["trial_id"] == trial.trial_id].iloc[0]
        mark_manifest(self.sweep.trial(trial.trial_id), row)
        values = "  ".join(f"{o.metric} {short(row.get(o.metric))}" for o in self.objectives)
        say(f"[sweep] trial {trial.trial_id} {row['status']}{' ' + row['reason'] if row['reason'] else ''}: {values}")

    def write(self, trials: list) -> pd.DataFrame:
        frame = table(trials, self.sweep, self.budget)
        running = {t.trial_id for t in trials if t.status in (Trial.RUNNING, Trial.PENDING)}
        prune_checkpoints(frame, self.objectives, self.keep_best, running=running)
        partial = self.sweep.local / f".{RESULTS_FILE}.partial"
        frame.to_csv(partial, index=False)
        partial.replace(self.sweep.local / RESULTS_FILE)
        self.sweep.push()  # a long sweep's table can be read while it runs, wherever it lives
        return frame


def read_results(sweep_dir: Path) -> pd.DataFrame:
    """results.csv as written (empty when no trial reported). Tune's trial ids are hex: one of
    digits alone (``01234567``) must stay text, not become a number without its leading zero."""
    path = sweep_dir / RESULTS_FILE
    return pd.read_csv(path, dtype={"trial_id": str}) if path.exists() else pd.DataFrame()


def mark_manifest(run: RunLocation, row: pd.Series) -> None:
    """A trial's run directory says how it ended (``platform.monitor`` reads it as a run)."""
    manifest = run.read_json(artifacts.MANIFEST_FILE) if row["run_dir"] else None
    if manifest and manifest.get("status") == "running":
        status = {COMPLETED: "finished", ERROR: "failed"}.get(row["status"], "stopped")
        reason = f"{row['status']}{': ' + row['reason'] if row['reason'] else ''}"
        run.write_json(artifacts.MANIFEST_FILE, {**manifest, "status": status, "sweep_status": reason, "updated": artifacts.now()})


def prune_checkpoints(frame: pd.DataFrame, objectives: list[Objective], keep: int, running: set[str]) -> list[str]:
    """Remove the checkpoints of finished trials after the first ``keep`` in ``ranked`` order.

    The best trial (``best_index``) is the first of that order, so it keeps its checkpoints. A removed
    trial can never come back into the first ``keep``: the others are already ahead of it, and a
    running trial that overtakes it only pushes it further back.
    """
    done = frame[~frame["trial_id"].isin(running) & (frame["run_dir"] != "")]
    removed = []
    for label in ranked(done, objectives)[keep:]:
        run_dir = done.loc[label, "run_dir"]
        removed += [f"{run_dir}/{folder}" for folder in checkpoints.remove(run_dir, checkpoints.folders(run_dir))]
    return removed


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
