"""The sweep's edges without Ray: which trials keep their checkpoints, saving a tier over a saved
tier, broken tier files, and two sweeps at once (their folders, the tier they both save).

    .venv/bin/python -m pytest tests/test_tune_edges.py

The two-sweeps case from outside (two ``python -m platform.tune`` started together) and a sweep
asking for GPUs the cluster lacks are the last tests; they start Ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, S3_BUCKET, TEST_ENV, last_line, run_command
from hypothesis import given, settings
from hypothesis import strategies as st

from platform import config as config_lib
from platform import registry
from platform.errors import UserError
from platform.tune.results import ASHA, BUDGET, COMPLETED, ERROR, NOT_RUN, best_index, prune_checkpoints, read_results
from platform.tune.space import Objective

EPOCHS = ("epoch_0001", "epoch_0002")


def _sweep_frame(root: Path, rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    """A results table whose trials each have a run directory with real ``epoch_*`` folders."""
    for trial_id, _status, _score in rows:
        for epoch in EPOCHS:
            (root / trial_id / epoch).mkdir(parents=True)
            (root / trial_id / epoch / "state.pt").write_bytes(b"weights")
    return pd.DataFrame([{"trial_id": t, "status": s, "val/acc": v, "train_s": 10.0, "run_dir": str(root / t)} for t, s, v in rows])


def _has_checkpoints(run_dir: str) -> bool:
    return all((Path(run_dir) / epoch / "state.pt").exists() for epoch in EPOCHS)


def test_a_sweep_never_deletes_its_winners_checkpoints(tmp_path):
    # The sweep: the stopped and errored trials scored higher than the one that completed.
    frame = _sweep_frame(tmp_path, [("a", COMPLETED, 0.80), ("b", ERROR, 0.85), ("c", ASHA, 0.83), ("d", f"{BUDGET}", 0.82)])
    objectives = [Objective("val/acc", "max")]
    best = best_index(frame, objectives)
    removed = prune_checkpoints(frame, objectives, keep=3, running=set())
    assert frame.loc[best, "trial_id"] == "a"
    assert _has_checkpoints(frame.loc[best, "run_dir"]), removed
    # The best three in one order: a (completed), then b and c; d's checkpoints go.
    assert sorted(removed) == [str(tmp_path / "d" / epoch) for epoch in EPOCHS]


STATUSES = [COMPLETED, ERROR, ASHA, BUDGET, NOT_RUN]


@st.composite
def sweeps(draw):
    size = draw(st.integers(1, 8))
    statuses = draw(st.lists(st.sampled_from(STATUSES), min_size=size, max_size=size))
    scores = draw(st.lists(st.one_of(st.none(), st.sampled_from([0.1, 0.5, 0.5, 0.9])), min_size=size, max_size=size))
    seconds = draw(st.lists(st.sampled_from([1.0, 2.0]), min_size=size, max_size=size))
    running = draw(st.sets(st.integers(0, size - 1)))
    objectives = [Objective("val/acc", draw(st.sampled_from(["min", "max"])))]
    if draw(st.booleans()):
        objectives.append(Objective("train_s", "min"))
    return statuses, scores, seconds, running, objectives, draw(st.integers(1, 4))


@pytest.mark.parametrize("ids", [["01234567"], ["01234567", "e2976d75"]], ids=["alone", "beside-hex"])
def test_a_trial_id_of_digits_alone_reads_back_as_the_id_it_is(tmp_path, ids):
    """About 2% of Tune's hex trial ids are digits alone; as numbers they lose leading zeros and break paths."""
    pd.DataFrame([{"trial_id": trial_id, "status": COMPLETED} for trial_id in ids]).to_csv(tmp_path / "results.csv", index=False)
    assert read_results(tmp_path)["trial_id"].tolist() == ids


@settings(max_examples=150, deadline=None)
@given(sweeps())
def test_the_trial_a_sweep_picks_as_best_never_loses_its_checkpoints(sweep):
    statuses, scores, seconds, running, objectives, keep = sweep
    with tempfile.TemporaryDirectory() as root:
        rows = [(f"t{i}", status, float("nan") if score is None else score) for i, (status, score) in enumerate(zip(statuses, scores))]
        frame = _sweep_frame(Path(root), rows).assign(train_s=seconds)
        running_ids = {f"t{i}" for i in running}
        removed = prune_checkpoints(frame, objectives, keep=keep, running=running_ids)
        best = best_index(frame, objectives)
        if best is not None:
            assert _has_checkpoints(frame.loc[best, "run_dir"]), (frame, removed)
            completed = frame[frame["status"] == COMPLETED]["val/acc"].dropna()
            assert frame.loc[best, "status"] == COMPLETED or completed.empty
        assert all(_has_checkpoints(str(Path(root) / t)) for t in running_ids)
        kept = [t for t in frame["trial_id"] if t not in running_ids and _has_checkpoints(str(Path(root) / t))]
        assert len(kept) == min(keep, len(frame) - len(running_ids))


# ---------------------------------------------------------------- saved tiers


def _write_tier(storage: Path, name: str, content) -> Path:
    path = registry.saved_tier_path(storage, "asl", name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _trial_row(storage: Path, trial_id: str, tier: str, sampled: dict) -> pd.Series:
    """A finished trial of ``tier`` with ``sampled`` values, its config.json as the trial wrote it."""
    run_dir = storage / "asl" / "sweeps" / "s" / "trials" / trial_id
    run_dir.mkdir(parents=True)
    cfg = registry.resolve("asl", tier, [], trial=sampled, storage=storage)
    (run_dir / "config.json").write_text(json.dumps(config_lib.to_dict(cfg)))
    return pd.Series(
        {"trial_id": trial_id, "tier": tier, "status": COMPLETED, "val/acc": 0.9, "run_dir": str(run_dir)}
        | {f"config/{k}": v for k, v in sampled.items()}
    )


def _save(storage: Path, row: pd.Series, name: str = "tuned") -> Path:
    from platform.tune import location
    from platform.tune.best import save_tier

    config = json.loads((Path(row["run_dir"]) / "config.json").read_text())
    sweep = location.locate(str(storage), "asl", "s")
    return Path(save_tier(str(storage), registry.load("asl"), name=name, row=row, config=config, sets=[], sweep=sweep))


def test_a_sweep_over_a_saved_tier_saves_it_on_its_preset_and_keeps_the_file_it_replaces(tmp_path):
    earlier = {"base": "smoke", "overrides": {"lr": 0.002, "epochs": 3}, "source": {"trial": "old"}}
    path = _write_tier(tmp_path, "tuned", earlier)
    row = _trial_row(tmp_path, "t1", "tuned", {"dim": 128})
    trained = json.loads((Path(row["run_dir"]) / "config.json").read_text())

    _save(tmp_path, row)
    saved = json.loads(path.read_text())
    assert saved["base"] == "smoke" and saved["overrides"] == {"lr": 0.002, "epochs": 3, "dim": 128}
    assert json.loads(json.dumps(config_lib.to_dict(registry.resolve("asl", "tuned", storage=tmp_path)))) == trained  # what it trained
    replaced = list((path.parent / "replaced").glob("tuned-*.json"))
    assert [json.loads(p.read_text()) for p in replaced] == [earlier]
    _, space = registry.load_config("asl")
    assert registry.tier_names(space, tmp_path).count("tuned") == 1
    assert not any(name.startswith("tuned-") for name in registry.tier_names(space, tmp_path))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"tuned": {"base": "tuned", "overrides": {}}}, "has base tiers in a loop: tuned -> tuned"),
        (
            {"tuned": {"base": "b", "overrides": {}}, "b": {"base": "tuned", "overrides": {}}},
            "has base tiers in a loop: tuned -> b -> tuned",
        ),
        ({"tuned": {"base": "huge", "overrides": {}}}, "has base tier 'huge', which is no tier of asl"),
        ({"tuned": '{"base": "smoke",'}, "is malformed"),
        ({"tuned": {"base": ["smoke"], "overrides": {}}}, "is malformed"),
        ({"tuned": {"base": "smoke", "overrides": [1]}}, "is malformed"),
    ],
)
def test_a_broken_saved_tier_is_one_error_naming_its_file_and_leaves_the_other_tiers_alone(tmp_path, files, message):
    for name, content in files.items():
        _write_tier(tmp_path, name, content)
    _write_tier(tmp_path, "good", {"base": "smoke", "overrides": {"lr": 0.001}})
    _, space = registry.load_config("asl")
    with pytest.raises(UserError) as raised:
        registry.tier_overrides(space, "tuned", tmp_path)
    assert str(raised.value).startswith("saved tier ") and message in str(raised.value), raised.value
    assert str(tmp_path / "asl" / "tiers") in str(raised.value)
    assert "tuned" in registry.broken_tiers(space, tmp_path) and "tuned" not in registry.tier_names(space, tmp_path)
    assert registry.tier_overrides(space, "good", tmp_path)["lr"] == 0.001


def _platform_run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m platform.run`` from ``cwd``, whose ``./runs`` is the default storage --help reads."""
    env = {**os.environ, **TEST_ENV, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "platform.run", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_a_self_referential_saved_tier_never_breaks_help_and_is_refused_naming_its_file(tmp_path):
    # What a sweep over `tuned` saving `tuned` wrote before the fix.
    path = _write_tier(tmp_path / "runs", "tuned", {"base": "tuned", "overrides": {"lr": 0.002}})
    _write_tier(tmp_path / "runs", "good", {"base": "smoke", "overrides": {"lr": 0.001}})
    shown = _platform_run(tmp_path, "asl", "--help")
    assert shown.returncode == 0 and "  good: " in shown.stdout, shown.stderr[-2000:]
    refused = _platform_run(tmp_path, "asl", "--tier", "tuned", "--print-config")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert last_line(refused.stderr).startswith(f"error: saved tier {path.resolve()} has base tiers in a loop"), refused.stderr[-2000:]


def test_a_dangling_link_or_a_folder_among_the_saved_tiers_breaks_nothing(tmp_path):
    _write_tier(tmp_path / "runs", "good", {"base": "smoke", "overrides": {"lr": 0.001}})
    tiers = tmp_path / "runs" / "asl" / "tiers"
    (tiers / "old.json").symlink_to(tmp_path / "gone.json")
    (tiers / "folder.json").mkdir()
    shown = _platform_run(tmp_path, "asl", "--help")
    assert shown.returncode == 0 and "  good: " in shown.stdout, shown.stderr[-2000:]
    printed = _platform_run(tmp_path, "asl", "--tier", "good", "--print-config")
    assert printed.returncode == 0 and "lr: 0.001" in printed.stdout, printed.stderr[-2000:]
    refused = _platform_run(tmp_path, "asl", "--tier", "old", "--print-config")
    assert refused.returncode == 2 and last_line(refused.stderr).startswith("error: unknown tier 'old' for asl; known: "), refused.stderr


@pytest.fixture(params=["folder", "s3"])
def tier_storage(request, tmp_path) -> str:
    """Where the saved tiers of a test go: a folder, then a bucket on the loopback S3 server."""
    if request.param == "folder":
        return str(tmp_path / "storage")
    request.getfixturevalue("s3_env")
    return f"s3://{S3_BUCKET}/tiers-{tmp_path.name}"


def _stored_versions(storage: str) -> list[str]:
    """The trial each saved version of ``tuned`` (current and replaced) came from, as ``storage`` holds them."""
    import pyarrow.fs as pafs

    from platform.data.store import filesystem

    fs, root = filesystem(f"{storage}/asl/tiers")
    found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    names = [info.path for info in found if info.type == pafs.FileType.File and info.path.endswith(".json")]
    return [json.loads(fs.open_input_stream(name).read())["source"]["trial"] for name in names]


def _write_stored(storage: str, relative: str, data: bytes) -> None:
    from platform.data.store import filesystem

    fs, path = filesystem(f"{storage}/{relative}")
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def test_sweeps_saving_one_tier_at_once_lose_no_version_of_it_and_readers_always_find_it(tier_storage, tmp_path):
    """Six saves of ``tuned`` and a dozen commands resolving it, at once, on one machine."""
    from platform.runs import storage as storage_lib
    from platform.tune import location
    from platform.tune.best import save_tier

    first = {"base": "smoke", "overrides": {"lr": 0.002}, "source": {"trial": "first"}}
    _write_stored(tier_storage, "asl/tiers/tuned.json", json.dumps(first).encode())
    rows = [_trial_row(tmp_path, f"t{i}", "smoke", {"lr": 0.001 + i * 1e-4}) for i in range(6)]
    sweep = location.locate(tier_storage, "asl", "s")
    learning_rates = (0.002, *(0.001 + i * 1e-4 for i in range(6)))
    start = threading.Barrier(len(rows) + 12)
    errors = []

    def save(row):
        start.wait()
        config = json.loads((Path(row["run_dir"]) / "config.json").read_text())
        save_tier(tier_storage, registry.load("asl"), name="tuned", row=row, config=config, sets=[], sweep=sweep)

    def read(_):
        start.wait()
        assert registry.resolve("asl", "tuned", storage=storage_lib.tiers_root(tier_storage, "asl")).lr in learning_rates

    def attempt(work, argument):
        try:
            work(argument)
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=attempt, args=(save, row)) for row in rows]
    threads += [threading.Thread(target=attempt, args=(read, n)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(_stored_versions(tier_storage)) == sorted(["first", *(row["trial_id"] for row in rows)])


def test_a_sweep_on_s3_resumed_where_the_cache_lies_elsewhere_writes_to_that_machines_mirror(s3_env, tmp_path, monkeypatch):
    """Tune keeps the sweep's callback and scheduler pickled in the bucket: unpickled on another
    machine (another cache folder), they write to that machine's mirror, not to the first one's."""
    import pickle

    from platform.tune import location
    from platform.tune.results import RecordingASHA, SweepCallback
    from platform.tune.space import Objective

    monkeypatch.setenv("RAYPLATFORM_CACHE", str(tmp_path / "first-machine"))
    sweep = location.locate(f"s3://{S3_BUCKET}/moved", "asl", "s")
    pickled = pickle.dumps((SweepCallback(sweep, [Objective("val/acc", "max")], 3, None), RecordingASHA(sweep, "val/acc", "max")))
    monkeypatch.setenv("RAYPLATFORM_CACHE", str(tmp_path / "second-machine"))
    callback, scheduler = pickle.loads(pickled)
    here = location.locate(f"s3://{S3_BUCKET}/moved", "asl", "s").local
    assert callback.sweep.local == scheduler._sweep.local == here and here.is_relative_to(tmp_path / "second-machine")
    assert callback.sweep.remote == sweep.remote


def test_credentials_inside_a_storage_uri_are_one_line_and_reach_no_file(s3_env, tmp_path):
    env = {**os.environ, "RAYPLATFORM_CACHE": str(tmp_path / "cache")}
    storage = f"s3://testing:secret-key@{S3_BUCKET}/runs"
    for command in (["tune", "asl", "--tiers", "smoke", "--dry-run"], ["run", "asl", "--tier", "smoke", "--print-config"]):
        result = subprocess.run(
            [sys.executable, "-m", f"platform.{command[0]}", *command[1:], "--storage", storage],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, result.stderr[-2000:]
        assert last_line(result.stderr).startswith("error: --storage s3://***@runs-bucket/runs") and "credentials" in result.stderr
        assert "secret-key" not in result.stdout + result.stderr
    assert not any("secret-key" in str(path) for path in tmp_path.rglob("*"))


# ---------------------------------------------------------------- two sweeps' folders


def test_sweeps_that_draw_one_default_name_each_claim_their_own_folder(tmp_path):
    from platform.tune import cli, location

    drawn = location.locate(str(tmp_path), "asl", "smoke-20250101-120000-abcd")  # what both drew in one second
    claimed, start = [], threading.Barrier(4)

    def claim():
        start.wait()
        claimed.append(cli.claim(drawn, "asl", named=False, prefix="smoke").local)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(claimed)) == 4 and drawn.local in claimed
    assert all(p.name.startswith("smoke-") and (p / ".claimed").exists() for p in claimed)


def test_a_sweep_name_already_taken_is_refused_whatever_the_timing(tmp_path):
    from platform.tune import cli, location

    sweep = location.locate(str(tmp_path), "asl", "mine")
    sweep_dir = sweep.local
    winners, refused, start = [], [], threading.Barrier(4)

    def claim():
        start.wait()
        try:
            winners.append(cli.claim(sweep, "asl", named=True, prefix="smoke").local)
        except UserError as err:
            refused.append(str(err))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert winners == [sweep_dir] and len(refused) == 3
    assert refused[0] == f"sweep {sweep_dir} already exists: pass --resume to continue it, or another --name"


def test_a_claimed_sweep_and_one_from_before_claims_both_resume(tmp_path):
    from platform.tune import cli, location

    for name, claimed in (("new", True), ("old", False)):
        sweep = location.locate(str(tmp_path), "asl", name)
        sweep.local.mkdir(parents=True)
        if claimed:
            (sweep.local / ".claimed").write_text("{}")
        (sweep.local / cli.SETTINGS_FILE).write_text(json.dumps({"tiers": "smoke", "trials": 2}))
        args = cli.build_parser().parse_args(["asl", "--name", name, "--resume"])
        assert cli.settings(args, sweep)["trials"] == 2


def test_sweeps_given_one_name_on_s3_at_once_leave_it_to_exactly_one(s3_env):
    from platform.tune import cli, location

    sweep = location.locate(f"s3://{S3_BUCKET}/sweeps", "asl", "shared")
    winners, refused, start = [], [], threading.Barrier(4)

    def claim():
        start.wait()
        try:
            winners.append(cli.claim(sweep, "asl", named=True, prefix="smoke"))
        except UserError as err:
            refused.append(str(err))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1 and len(refused) == 3
    assert refused[0] == f"sweep s3://{S3_BUCKET}/sweeps/asl/sweeps/shared already exists: pass --resume to continue it, or another --name"


def test_a_sweep_on_a_missing_bucket_is_one_line_before_ray_starts(s3_env, tmp_path):
    command = [sys.executable, "-m", "platform.tune", "asl", "--tiers", "smoke", "--storage", "s3://no-such-bucket/runs"]
    result = subprocess.run(command, cwd=REPO, env={**os.environ}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert last_line(result.stderr).startswith("error: --storage s3://no-such-bucket/runs/asl/sweeps/smoke-"), result.stderr[-2000:]
    assert "bucket 'no-such-bucket' does not exist" in last_line(result.stderr) and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--save-tier", "smoke"], "error: --save-tier smoke: 'smoke' is a preset tier of asl"),
        (["--save-tier", "../../elsewhere"], "error: --save-tier '../../elsewhere' must be a name"),
        (["--name", "../elsewhere"], "error: --name '../elsewhere' must be a folder name"),
    ],
)
def test_a_save_tier_or_name_that_is_a_path_or_a_preset_is_refused(args, message, tmp_path):
    env = {**os.environ, **TEST_ENV}
    command = [sys.executable, "-m", "platform.tune", "asl", "--tiers", "smoke", *args, "--storage", str(tmp_path), "--dry-run"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and last_line(result.stderr).startswith(message), result.stderr[-2000:]
    assert not any(tmp_path.iterdir())


def test_sweeps_started_together_keep_their_own_folders_and_a_shared_name_goes_to_one(ray_address, tmp_path):
    env = {**os.environ, **TEST_ENV, "RAY_ADDRESS": ray_address}
    command = [sys.executable, "-m", "platform.tune", "asl", "--tiers", "smoke", "--trials", "1", "--cpus-per-trial", "0.5"]
    command += ["--set", "epochs=1", "--storage", str(tmp_path)]
    names = {1: [], 2: ["--name", "shared"], 3: ["--name", "shared"]}  # by seed
    drivers = {
        seed: subprocess.Popen(
            [*command, "--set", f"seed={seed}", *name], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for seed, name in names.items()
    }
    ends = {seed: (driver.communicate(timeout=300)[1], driver.returncode) for seed, driver in drivers.items()}
    assert ends[1][1] == 0, ends[1][0][-3000:]
    assert sorted(code for _err, code in (ends[2], ends[3])) == [0, 2], {seed: end[0][-2000:] for seed, end in ends.items()}
    refused = next(err for err, code in (ends[2], ends[3]) if code == 2)
    assert last_line(refused).startswith(f"error: sweep {tmp_path / 'asl' / 'sweeps' / 'shared'} already exists"), refused[-2000:]
    folders = sorted((tmp_path / "asl" / "sweeps").iterdir())
    assert len(folders) == 2 and folders[0].name == "shared" and folders[1].name.startswith("smoke-"), folders
    for folder in folders:  # each folder holds one sweep's settings and trial, of one seed
        sets = json.loads((folder / "sweep.json").read_text())["sets"]
        (trial,) = pd.read_csv(folder / "results.csv")["run_dir"]
        trained = json.loads((Path(trial) / "config.json").read_text())["seed"]
        assert Path(trial).is_relative_to(folder) and sets == ["epochs=1", f"seed={trained}"]
        assert trained == 1 or ends[trained][1] == 0


def test_a_sweep_asking_for_gpus_the_cluster_lacks_is_one_line(ray_address, tmp_path):
    result = run_command("tune", "asl", "--tiers", "smoke", "--trials", "1", "--gpu", "--storage", str(tmp_path), address=ray_address)
    assert result.returncode == 2 and last_line(result.stderr) == "error: --gpu asks for 1 GPU(s) a trial; the Ray cluster has 0"
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "asl" / "sweeps").exists() or not any((tmp_path / "asl" / "sweeps").iterdir())


@settings(max_examples=300, deadline=None)
@given(
    cpus=st.integers(1, 64) | st.sampled_from([0.5, 1.5, 2.5]),
    gpus=st.none() | st.integers(0, 8),
    workers=st.integers(1, 8),
    concurrent=st.none() | st.integers(1, 16),
    cpus_per_trial=st.none() | st.floats(0.01, 16),
    trials=st.integers(1, 20),
)
def test_every_trial_a_sweep_runs_at_once_fits_the_cluster(cpus, gpus, workers, concurrent, cpus_per_trial, trials):
    """``--workers-per-trial``, ``--cpus-per-trial``, ``--concurrent`` and ``--gpu`` on any cluster:
    the trials at once, each its workers and its trial function, never ask for more than it has (a
    trial that asks for more waits for ever), or the sweep is refused in one line before any trial."""
    from platform.tune import cli
    from platform.tune.trial import TRIAL_DRIVER_CPU

    chosen = {"trials": trials, "concurrent": concurrent, "cpus_per_trial": cpus_per_trial or float(workers)}
    try:
        at_once, cpus_per_worker = cli.share(chosen, workers, cpus, gpus)
    except UserError as refused:
        assert str(refused).startswith("--gpu asks for") if gpus is not None and gpus < workers else "do not fit" in str(refused)
        return
    assert at_once * (workers * cpus_per_worker + TRIAL_DRIVER_CPU) <= cpus + 1e-9
    assert 0 < cpus_per_worker <= chosen["cpus_per_trial"] / workers and round(cpus_per_worker, 2) == cpus_per_worker
    assert 1 <= at_once <= trials and (gpus is None or concurrent is not None or at_once * workers <= gpus)


@pytest.mark.parametrize(("cpus", "workers", "expected"), [(16, 4, (4, 0.99)), (2, 4, (1, 0.49))])
def test_the_audits_sweeps_that_asked_for_more_cpus_than_the_cluster_has_fit_it(cpus, workers, expected):
    from platform.tune import cli

    chosen = {"trials": 8, "concurrent": None, "cpus_per_trial": float(workers)}
    assert cli.share(chosen, workers, cpus, None) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers-per-trial", "0"], "--workers-per-trial must be positive, not 0"),
        (["--workers-per-trial", "-2"], "--workers-per-trial must be positive, not -2"),
        (["--cpus-per-trial", "0"], "--cpus-per-trial must be positive, not 0"),
        (["--cpus-per-trial", "-0.5"], "--cpus-per-trial must be positive, not -0.5"),
        (["--trials", "0"], "--trials must be positive, not 0"),
        (["--concurrent", "0"], "--concurrent must be positive, not 0"),
        (["--keep-best", "0"], "--keep-best must be positive, not 0"),
    ],
)
def test_a_count_of_zero_or_less_is_refused_naming_its_option_not_taken_for_the_default(args, message, tmp_path):
    from platform.tune import cli, location

    with pytest.raises(UserError) as refused:
        cli.settings(cli.build_parser().parse_args(["asl", *args]), location.locate(str(tmp_path), "asl", "sweep"))
    assert str(refused.value) == message


@pytest.mark.parametrize("args", [["--workers-per-trial", "-2", "--dry-run"], ["--cpus-per-trial", "0"]])
def test_a_count_of_zero_or_less_is_one_line_before_ray_starts(args, tmp_path):
    """With ``--dry-run`` or without (no Ray at ``--address`` to reach): the option named, nothing written."""
    env = {**os.environ, **TEST_ENV}
    command = [
        sys.executable,
        "-m",
        "platform.tune",
        "asl",
        "--tiers",
        "smoke",
        *args,
        "--storage",
        str(tmp_path),
        "--address",
        "127.0.0.1:9",
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and last_line(result.stderr) == f"error: {args[0]} must be positive, not {args[1]}", result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and not any(tmp_path.iterdir())
