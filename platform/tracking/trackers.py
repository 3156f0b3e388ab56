"""A run's trackers: TensorBoard event files (the default), MLflow, or both.

    python -m platform.run asl [--tracker tensorboard | mlflow | tensorboard,mlflow]
    python -m platform.tune asl --tracker mlflow

The drivers call :class:`Tracking` only: ``check`` before Ray starts (the choice, MLflow's client
installed, its server reachable, a resumed run's MLflow run there), ``open`` once the run
directory is written, ``callbacks`` for Ray Train's controller, ``finish`` or ``end`` at the end.
Workers never see a tracker. A run's MLflow run id is kept in its manifest (``tracking``), so
``--resume`` continues that MLflow run; a sweep keeps its parent run's in
``<sweep>/tracking.json``, where each trial finds it and opens a child run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from platform.errors import UserError, redacted
from platform.runs import run_files

CHOICES = ("tensorboard", "mlflow")
DEFAULT = "tensorboard"
MANIFEST_KEY = "tracking"
SWEEP_FILE = "tracking.json"
# What a finished run's MLflow run gets besides its plots (a trial: its manifest and config).
RUN_FILES = (run_files.MANIFEST_FILE, run_files.CONFIG_FILE, run_files.HISTORY_FILE, run_files.BEST_MODEL_FILE)
TRIAL_FILES = (run_files.MANIFEST_FILE, run_files.CONFIG_FILE)
# A sweep's files its parent MLflow run gets (platform/tune/cli.py writes them).
SWEEP_FILES = ("sweep.json", "results.csv", "best.json", "pareto.png")


def parse(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in CHOICES]
    if not names or unknown:
        raise UserError(f"--tracker {text!r}: choose tensorboard, mlflow or both (tensorboard,mlflow)")
    return names


def saved_trackers(record: dict | None) -> str | None:
    """The trackers a run or sweep started with, as ``--tracker`` spells them."""
    names = (record or {}).get(MANIFEST_KEY, {}).get("trackers")
    return ",".join(names) if names else None


class Tracking:
    """The trackers of one run (or one sweep's parent run). A sweep's trial is a child of the
    sweep's MLflow run (``parent_id``), tagged with its trial id, and sends fewer files."""

    def __init__(
        self, names: tuple[str, ...], target: Any = None, *, parent_id: str | None = None, tags: dict | None = None, files=RUN_FILES
    ):
        self.names = names
        self.target = target  # mlflow_tracker.Target when MLflow is on
        self.run_id: str | None = None
        self.parent_id, self.tags, self.files = parent_id, tags or {}, files
        self._metrics: Any = None  # the run's Prometheus gauges (platform/tracking/metrics.py), once it is open

    @classmethod
    def check(cls, text: str, storage: str, stem: str, saved: dict | None = None) -> Tracking:
        """Before Ray starts. ``saved``: a resumed run's manifest (or a sweep's tracking.json)."""
        names = parse(text)
        if "mlflow" not in names:
            return cls(names)
        from platform.tracking import mlflow_tracker

        mlflow_tracker.check_installed()
        target = mlflow_tracker.target(storage, stem)
        mlflow_tracker.check_reachable(target.uri)
        run_id = _mlflow_record(saved).get("run_id")
        if run_id:
            mlflow_tracker.check_run(target, run_id)
        return cls(names, target)

    @property
    def mlflow(self) -> bool:
        return self.target is not None

    def open(self, record_path: Path, record: dict, name: str, params: dict, tags: dict) -> None:
        """Start the MLflow run, or continue the one ``record`` names; note it in ``record`` and in
        its file (a manifest, or a sweep's tracking.json)."""
        entry: dict[str, Any] = {"trackers": list(self.names)}
        tags, parent_id = {**tags, **self.tags}, self.parent_id
        if "config" in record:  # a run's manifest, not a sweep's record
            from platform.tracking import metrics

            named = {
                "run": tags.get("run_name", name),
                "trainable": tags.get("stem", ""),
                "tier": tags.get("tier", ""),
                "trial": tags.get("trial_id", ""),
            }
            self._metrics = metrics.for_run(record, named, (record["metric"]["name"], record["metric"]["mode"]))
        if self.mlflow:
            from platform.tracking import mlflow_tracker

            self.run_id = _mlflow_record(record).get("run_id")
            if self.run_id:
                mlflow_tracker.reopen_run(self.target, self.run_id, tags)
            else:
                self.run_id = mlflow_tracker.start_run(self.target, name, params, tags, parent_id)
                # Now, not only at the end: a trial that Tune stops early never reaches its end.
                mlflow_tracker.log_files(self.target, self.run_id, [record_path.parent / run_files.CONFIG_FILE])
            entry["mlflow"] = {
                "run_id": self.run_id,
                "tracking_uri": self.target.shown_uri,
                "experiment": self.target.experiment,
                "parent_run_id": parent_id,
            }
            print(f"MLflow run {self.run_id} ({self.target.experiment}) at {self.target.shown_uri}", flush=True)
        record[MANIFEST_KEY] = entry
        on_disk = run_files.read_json(record_path) if record_path.exists() else {}
        run_files.write_json(record_path, {**on_disk, MANIFEST_KEY: entry})

    def callbacks(self, run_dir: Path) -> list:
        """Ray Train callbacks: they run in its controller, on the driver's node. Every run's
        figures go to Ray's metrics pipeline, whatever the trackers."""
        found = [self._metrics] if self._metrics is not None else []
        if "tensorboard" in self.names:
            from platform.tracking.tensorboard import TensorBoardCallback

            found.append(TensorBoardCallback(run_dir / run_files.TENSORBOARD_DIR))
        if self.mlflow:
            from platform.tracking import mlflow_tracker

            logged = mlflow_tracker.logged_epochs(self.target, self.run_id)
            found.append(mlflow_tracker.MlflowCallback(self.target, self.run_id, max(logged, default=0)))
        return found

    def finish(self, run_dir: Path, history: list[dict]) -> None:
        """A finished run: epochs the callback missed, then the run's files and plots, then the end."""
        if not self.mlflow:
            return
        from platform.tracking import mlflow_tracker

        mlflow_tracker.log_missing_epochs(self.target, self.run_id, history)
        mlflow_tracker.log_files(self.target, self.run_id, [run_dir / name for name in self.files])
        mlflow_tracker.log_files(self.target, self.run_id, sorted(run_dir.glob("*.png")), folder="plots")
        mlflow_tracker.end_run(self.target, self.run_id, "FINISHED")

    def end(self, status: str) -> None:
        """FAILED, or KILLED for an interrupted run (a ``--resume`` sets it running again). Called
        while another error is on its way out, so a tracking error is only a warning here."""
        if not (self.mlflow and self.run_id):
            return
        from platform.tracking import mlflow_tracker

        try:
            mlflow_tracker.end_run(self.target, self.run_id, status)
        except Exception as err:  # noqa: BLE001 - the run's own error is the one to report
            print(f"warning: MLflow run {self.run_id} not marked {status}: {redacted(str(err).splitlines()[0])}", flush=True)

    # ------------------------------------------------------------------ sweeps

    def open_sweep(self, sweep_dir: Path, settings: dict, stem: str) -> None:
        """The sweep's parent run (continued on ``--resume``), with the sweep's settings as params."""
        path = sweep_dir / SWEEP_FILE
        record = run_files.read_json(path) if path.exists() else {}
        tags = {"stem": stem, "sweep": sweep_dir.name, "sweep_dir": str(sweep_dir), "kind": "sweep"}
        self.open(path, record, f"sweep-{sweep_dir.name}", {"stem": stem, **settings}, tags)

    def finish_sweep(self, sweep_dir: Path) -> None:
        """The parent run gets the best trial's result and the sweep's files; trials Tune stopped
        early are ended."""
        if not self.mlflow:
            return
        from platform.tracking import mlflow_tracker

        mlflow_tracker.end_running_children(self.target, self.run_id)
        best_path = sweep_dir / "best.json"
        if best_path.exists():
            best = run_files.read_json(best_path)
            values = {
                f"best/{key}": value for key, value in {**best["metrics"], **best["objectives"]}.items() if isinstance(value, (int, float))
            }
            mlflow_tracker.log_epoch(mlflow_tracker.client(self.target.uri), self.run_id, {"epoch": 0, **values})
            mlflow_tracker.reopen_run(self.target, self.run_id, {"best_trial_id": best["trial_id"], "best_tier": best["tier"]})
        mlflow_tracker.log_files(self.target, self.run_id, [sweep_dir / name for name in SWEEP_FILES])
        mlflow_tracker.end_run(self.target, self.run_id, "FINISHED")


def for_sweep(text: str | None, sweep_dir: Path, storage: str, stem: str, resume: bool) -> Tracking:
    """A sweep's ``--tracker``, checked before Ray starts; a resumed sweep keeps its own."""
    path = sweep_dir / SWEEP_FILE
    saved = run_files.read_json(path) if resume and path.exists() else None
    kept = saved_trackers(saved)
    if resume and text and kept and parse(text) != parse(kept):
        raise UserError(f"a resumed sweep keeps its trackers ({kept}): drop --tracker")
    return Tracking.check(text or kept or DEFAULT, storage, stem, saved)


def for_trial(saved: dict, trial_id: str) -> Tracking:
    """A trial's trackers, as its sweep chose them (``saved``: the sweep's ``SWEEP_FILE``): a child
    of the sweep's MLflow run."""
    names = tuple(saved.get(MANIFEST_KEY, {}).get("trackers") or (DEFAULT,))
    if "mlflow" not in names:
        return Tracking(names)
    from platform.tracking import mlflow_tracker

    parent = _mlflow_record(saved)
    # The trial's environment holds the credentials the written URI lacks; children sit in the
    # parent's experiment, which exists already.
    uri = mlflow_tracker.credentialed(parent["tracking_uri"])
    target = mlflow_tracker.Target(uri, parent["experiment"])
    return Tracking(names, target, parent_id=parent.get("run_id"), tags={"trial_id": trial_id}, files=TRIAL_FILES)


def run_params(stem: str, tier: str, config: dict) -> dict:
    return {"stem": stem, "tier": tier, **config}


def run_tags(stem: str, tier: str, name: str, run_dir: Path) -> dict:
    """What finds a run again: its stem, tier, name, folder and Ray job."""
    tags = {"stem": stem, "tier": tier, "run_name": name, "run_dir": str(run_dir)}
    try:
        import ray

        if ray.is_initialized():
            tags["ray_job_id"] = ray.get_runtime_context().get_job_id()
    except Exception:  # noqa: BLE001 - a tag is not worth failing a run for
        pass
    return tags


def _mlflow_record(record: dict | None) -> dict:
    return (record or {}).get(MANIFEST_KEY, {}).get("mlflow") or {}
