"""Runs the sweep planned by ``python -m platform.tune asl ...``: the Tuner, then what it leaves.

Optuna (TPE, define-by-run over the tier and the space) behind a ``ConcurrencyLimiter``; ASHA on
the first objective when asked; the trials of ``platform/tune/trial.py``. ``--resume`` restores
the Tuner from the sweep directory (``Tuner.restore``), so finished trials are not run again and
interrupted ones continue from their own checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from ray import tune
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from platform import config as config_lib
from platform.data import ingest
from platform.launching import Launch
from platform.runs import artifacts
from platform.tune import best as sweep_best
from platform.tune import trial as sweep_trial
from platform.tune.location import PLOT_FILE, RESULTS_FILE, SweepLocation
from platform.tune.plan import Plan
from platform.tune.results import COMPLETED, RecordingASHA, SweepCallback, best_index, pareto_mask, read_results
from platform.tune.space import TIER_DEFAULT, DefineByRun, Objective, format_duration, tier_default_points


def _shown(path: Path | str) -> str:
    """Relative to the working directory when inside it: shorter to copy; a URI as it is."""
    if "://" in str(path):
        return str(path)
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def trial_dirname(trial: Any) -> str:
    """Tune's own per-trial folder: short, beside ``trials/<id>`` (the Train run)."""
    return f"tune_{trial.trial_id}"


def asha(plan: Plan, sweep: SweepLocation) -> RecordingASHA:
    """ASHA on the first objective, a bracket a tier, first judging a trial halfway through its own
    epochs (``platform/tune/results.py`` says why)."""
    objective = plan.objectives[0]
    return RecordingASHA(sweep, metric=objective.metric, mode=objective.mode)


def trainable(plan: Plan, sweep: SweepLocation, launch: Launch):
    chosen = plan.chosen
    fn = tune.with_parameters(
        sweep_trial.run_trial,
        stem=plan.stem,
        tiers=plan.tiers,
        sets=chosen["sets"],
        data_dir=chosen["data"],
        config_values=plan.config_values,
        storage=plan.storage,
        sweep=sweep,
        launch=launch,
        env=sweep_trial.propagated_env(),
    )
    return tune.with_resources(fn, {"CPU": sweep_trial.TRIAL_DRIVER_CPU})


def sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Optuna's TPE (multi-objective too, for a Pareto front), or random search as a baseline."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def tuner(plan: Plan, sweep: SweepLocation, fn: Any, concurrent: int) -> tune.Tuner:
    objectives = plan.objectives
    metric = [o.metric for o in objectives] if len(objectives) > 1 else objectives[0].metric
    mode = [o.mode for o in objectives] if len(objectives) > 1 else objectives[0].mode
    # Each tier's own configuration first (they count within --trials): a sweep is judged against them.
    defaults = tier_default_points(plan.tiers, plan.space, plan.tier_configs)
    searcher = OptunaSearch(
        space=DefineByRun(plan.tiers, plan.space, defaults),
        metric=metric,
        mode=mode,
        points_to_evaluate=defaults,
        sampler=sampler(plan.chosen.get("sampler", "tpe"), plan.chosen["search_seed"]),
    )
    return tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrent),
            scheduler=asha(plan, sweep) if plan.scheduler == "asha" else None,
            num_samples=plan.chosen["trials"],
            time_budget_s=plan.budget,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=sweep.name,
            storage_path=sweep.train_storage,  # a folder or a URI: Tune keeps its state beside the sweep's files
            callbacks=[SweepCallback(sweep, objectives, plan.chosen["keep_best"], plan.budget)],
            # A trial whose workers could not start (CPUs not yet released) gets one more go; it
            # resumes its Train run from its checkpoints.
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=0,  # SweepCallback prints the trial table
        ),
    )


def run(plan: Plan, sweep: SweepLocation, concurrent: int, launch: Launch, resume: bool) -> str:
    """The sweep, each trial trained on ``launch`` (its workers, CPUs and GPUs)."""
    sweep_trial.prepare_shared(plan.trainable, plan.tier_configs, launch.store_root())
    fn = trainable(plan, sweep, launch)
    if resume and tune.Tuner.can_restore(sweep.run_uri):
        print(f"[sweep] resuming {sweep.shown}", flush=True)
        runner = tune.Tuner.restore(sweep.run_uri, trainable=fn, resume_unfinished=True, resume_errored=False)
    else:
        runner = tuner(plan, sweep, fn, concurrent)
    runner.fit()
    try:
        return finish(plan, sweep, launch.store_root())
    finally:
        sweep.push()


def _finished_run(run_dir: Path) -> dict | None:
    """The manifest of a trial that finished its run directory as ``platform.run`` does."""
    manifest = artifacts.read_json(run_dir / artifacts.MANIFEST_FILE) if (run_dir / artifacts.MANIFEST_FILE).exists() else {}
    return manifest if manifest.get("status") == "finished" and (run_dir / artifacts.BEST_MODEL_FILE).exists() else None


def finish(plan: Plan, sweep: SweepLocation, store: str | None = None) -> str:
    """results.csv with the front and the best marked, pareto.png, the best run, tier and best.json;
    ``store``: where the trials' data is kept (``Launch.store_root()``)."""
    sweep_dir = sweep.local
    frame = read_results(sweep_dir)
    if frame.empty:
        return "[sweep] no trial ran"
    frame[["reason", "run_dir"]] = frame[["reason", "run_dir"]].fillna("")  # CSV reads "" back as NaN
    frame[TIER_DEFAULT] = frame.get(TIER_DEFAULT, pd.Series(False, index=frame.index)).fillna(False).astype(bool)
    objectives = plan.objectives
    for objective in objectives:
        if objective.metric not in frame:
            frame[objective.metric] = float("nan")
    front = pareto_mask(frame, objectives)
    best = best_index(frame, objectives)
    frame["pareto"] = front if len(objectives) > 1 else False
    frame["best"] = [i == best for i in frame.index]
    frame.to_csv(sweep_dir / RESULTS_FILE, index=False)
    plot_front = front if len(objectives) > 1 else pareto_mask(frame, [objectives[0], Objective("train_s", "min")])
    title = f"{plan.stem} sweep {sweep_dir.name}: {len(frame)} trials"
    sweep_best.plot(frame, objectives, plot_front, best, sweep_dir / PLOT_FILE, title)

    counts = ", ".join(f"{n} {status}" for status, n in frame["status"].value_counts().items())
    lines = [f"[sweep] {len(frame)} of {plan.chosen['trials']} trials: {counts}"]
    if best is None:
        lines.append("[sweep] no trial reported the objective: nothing saved")
        return "\n".join(lines)
    row = frame.loc[best]
    run = sweep.trial(row["trial_id"])
    if row["run_dir"]:
        run.pull()
    config = artifacts.read_json(run.local / artifacts.CONFIG_FILE) if row["run_dir"] else None
    manifest = _finished_run(run.local) if row["run_dir"] else None
    if row["run_dir"] and manifest is None:  # a trial stopped before it finished its run directory
        # The trial's own config: its sampled values may have changed the data (a store look-up).
        splits, _meta = ingest.prepare(plan.trainable, config_lib.from_dict(plan.trainable.Config, config), store)
        manifest = sweep_best.export_best(plan.trainable, run, splits["val"])
    verdict = sweep_best.judge(frame, best, objectives[0])
    tier_path = (
        sweep_best.save_tier(
            plan.storage,
            plan.trainable,
            name=plan.chosen["save_tier"],
            row=row,
            config=config,
            sets=plan.chosen["sets"],
            sweep=sweep,
            config_keys=tuple(plan.config_values),
        )
        if verdict.save and row["run_dir"]
        else None
    )
    front_ids = list(frame.loc[front, "trial_id"]) if len(objectives) > 1 else []
    sweep_best.write_best(
        sweep_dir, row, objectives=objectives, config=config, manifest=manifest, tier_path=tier_path, front_ids=front_ids, verdict=verdict
    )
    values = "  ".join(f"{o.metric} {row[o.metric]:.4g}" for o in objectives)
    own = " (its tier's own config)" if row[TIER_DEFAULT] else ""
    lines.append(f"[sweep] best: trial {row['trial_id']} (tier {row['tier']}){own}: {values}")
    if front_ids:
        lines.append(f"[sweep] Pareto front: {len(front_ids)} trials: {', '.join(front_ids)}")
    lines.append(f"[sweep] {verdict.line}" + ("" if verdict.save else f": tier {plan.chosen['save_tier']!r} not saved"))
    if tier_path:
        lines.append(
            f"[sweep] saved tier {plan.chosen['save_tier']!r}: {_shown(tier_path)}  "
            f"(python -m platform.run {plan.stem} --tier {plan.chosen['save_tier']} --storage {_shown(plan.storage)})"
        )
    if manifest:
        lines.append(f"[sweep] best model: python -m platform.predict {_shown(row['run_dir'])} <input ...>")
    took = frame["time_s"].sum()
    lines.append(
        f"[sweep] results: {_shown(f'{sweep.shown}/{RESULTS_FILE}')}  ({format_duration(took)} of trial time; "
        f"{(frame['status'] == COMPLETED).sum()} completed)"
    )
    return "\n".join(lines)
