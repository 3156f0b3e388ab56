"""``python -m platform.run`` and ``platform.predict`` end to end on the shared Ray instance. The
tests of a run, its resume, prediction and monitoring run twice, with the same assertions: on a
folder and on ``s3://`` (the loopback S3 server).

.venv/bin/python -m pytest tests/test_run.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import REPO, S3_BUCKET, TEST_ENV, Storage, last_line, run_command, shared_dataset

from platform.runs import storage as storage_lib
from platform.train import checkpoints

EPOCHS = "5"
SMOKE = ["asl", "--tier", "smoke", "--set", f"epochs={EPOCHS}"]
COMPARED = ("train/loss", "train/acc", "val/loss", "val/acc", "lr")


def _history(run_dir: Path) -> list[dict]:
    return [{k: row[k] for k in ("epoch", *COMPARED)} for row in pd.read_csv(run_dir / "history.csv").to_dict("records")]


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.fixture(scope="module", params=["folder", "s3"])
def storage(request, tmp_path_factory) -> Storage:
    """Where the runs of the tests that take it go: a folder, then a bucket on the loopback S3 server."""
    if request.param == "folder":
        yield Storage(str(tmp_path_factory.mktemp("runs")))
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        for key, value in TEST_ENV.items():
            patch.setenv(key, value)
        yield Storage(f"s3://{S3_BUCKET}/{tmp_path_factory.mktemp('s3-runs').name}")


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory) -> Path:
    """Runs of the tests that are not about where runs are stored."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def plain_run(ray_address, storage) -> tuple[Path, str]:
    result = run_command("run", *SMOKE, "--storage", str(storage), "--name", "plain", "--progress", "on", address=ray_address)
    assert result.returncode == 0, result.stderr[-4000:]
    return storage.files("asl", "plain"), result.stdout + result.stderr


def test_run_prints_progress_and_writes_the_run_directory(plain_run):
    run_dir, stdout = plain_run
    assert "Ray dashboard: http://" in stdout
    assert f"epoch 1/{EPOCHS}" in stdout and "ETA" in stdout and "val/acc" in stdout
    # Ray's core logs a PreemptionWatcher line on every run; it is not the user's (--verbose shows it).
    assert "core_worker.cc" not in stdout and "Token authentication is enabled" not in stdout
    # --progress on: rank 0's bar of each epoch's steps, drawn by the driver.
    assert re.search(rf"\[asl\] epoch {EPOCHS}/{EPOCHS}  \d+ samples/s  loss \d\.\d+: 100%", stdout)
    for name in ("config.json", "meta.json", "manifest.json", "history.csv", "best_model.pt"):
        assert (run_dir / name).stat().st_size > 0, name
    for picture in ("training_curves.png", "confusion_matrix.png"):
        assert (run_dir / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
    manifest = _manifest(run_dir)
    assert manifest["status"] == "finished" and manifest["tier"] == "smoke"
    assert manifest["model"]["parameters"] > 0 and "SignClassifier" in manifest["model"]["class"]
    assert len(manifest["data"]["content_hash"]) >= 16 and manifest["data"]["rows"]["train"] > 0
    assert manifest["training"]["restarts"] == 0 and manifest["training"]["epochs_completed"] == int(EPOCHS)
    assert manifest["inference"]["ms_median"] > 0 and manifest["hardware"]["cpu_count"] >= 1
    assert [row["epoch"] for row in _history(run_dir)] == list(range(1, int(EPOCHS) + 1))
    saved = torch.load(run_dir / "best_model.pt", weights_only=True)
    assert saved["epoch"] == manifest["training"]["best_epoch"]
    assert manifest["metric"]["best"] == max(row["val/acc"] for row in _history(run_dir))
    trivial = manifest["baseline"]  # the trivial predictor beside the metric (tests/test_baseline.py)
    assert trivial["predictor"].startswith("majority class") and set(trivial) == {"predictor", "val"}
    assert f"best val/acc {manifest['metric']['best']:.4f} (baseline {trivial['val']['val/acc']:.4f})" in stdout


def _tensorboard_scalars(folder: Path, tag: str) -> dict[int, float]:
    """Scalars of one tag from TFRecord event files: length, its CRC, the Event, the Event's CRC."""
    from tensorboardX.proto import event_pb2

    found = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            length = int.from_bytes(data[offset : offset + 8], "little")
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            found.update((event.step, value.simple_value) for value in event.summary.value if value.tag == tag)
    return found


def test_metrics_are_tensorboard_scalars_too(plain_run):
    run_dir, _stdout = plain_run
    scalars = _tensorboard_scalars(run_dir / "tensorboard", "val/acc")
    assert scalars == pytest.approx({row["epoch"]: row["val/acc"] for row in _history(run_dir)})


def test_monitor_shows_the_finished_run_and_the_machine(plain_run, storage):
    result = run_command("monitor", str(storage))
    assert result.returncode == 0, result.stderr
    assert f"asl/plain  [finished]  tier smoke  epoch {EPOCHS}/{EPOCHS}" in result.stdout
    assert "best val/acc" in result.stdout and "machine: CPU" in result.stdout
    assert "GPU" in result.stdout  # "GPUs: none found" here, a line a GPU elsewhere


def test_the_run_learns_the_synthetic_signal(plain_run):
    history = _history(plain_run[0])
    assert history[-1]["train/loss"] < history[0]["train/loss"]


def test_predict_prints_top_signs_and_time(plain_run, storage):
    run_dir, _stdout = plain_run
    meta = json.loads((run_dir / "meta.json").read_text())
    sequence = next(Path(meta["data_path"]).glob("train_landmark_files/*/*.parquet"))
    result = run_command("predict", storage.run("asl", "plain"), str(sequence), "--top", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(str(sequence)) and lines[0].endswith(" ms)")
    shown = [line.split()[0] for line in lines[1:]]
    assert len(shown) == 3 and set(shown) <= set(meta["classes"])
    assert sum(float(line.split()[1]) for line in lines[1:]) <= 1.0 + 1e-6


def test_predict_works_beside_a_torn_manifest(plain_run, storage):
    run_dir, _stdout = plain_run
    for name in ("config.json", "meta.json", "best_model.pt"):
        storage.write("asl", "torn-manifest", name, (run_dir / name).read_bytes())
    storage.write("asl", "torn-manifest", "manifest.json", b'{"stem": "asl", "tier"')
    meta = json.loads((run_dir / "meta.json").read_text())
    sequence = next(Path(meta["data_path"]).glob("train_landmark_files/*/*.parquet"))
    result = run_command("predict", storage.run("asl", "torn-manifest"), str(sequence), "--top", "1")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(f"warning: {storage.run('asl', 'torn-manifest')}/manifest.json is unreadable (JSONDecodeError)")
    assert result.stdout.startswith(str(sequence))


def test_a_worker_killed_mid_run_resumes_to_the_same_metrics(plain_run, ray_address, storage):
    if storage.is_uri:
        pytest.skip("on s3: test_storage.py::test_a_run_writes_checkpoints_to_s3_and_recovers_a_lost_worker_from_them")
    result = run_command("run", *SMOKE, "--storage", str(storage), "--name", "faulty", "--fail-at-epoch", "3", address=ray_address)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "fault injection: worker exits as epoch 3 starts" in result.stdout + result.stderr
    faulty = storage.files("asl", "faulty")
    assert _manifest(faulty)["training"]["restarts"] == 1
    assert _history(faulty) == _history(plain_run[0])


def test_a_killed_driver_continues_with_resume(plain_run, ray_address, storage):
    env = {**os.environ, **TEST_ENV, "RAY_ADDRESS": ray_address}
    # The run's files and --resume, not Ray Train's workers: local mode (--workers 0), against plain_run's one worker.
    command = [sys.executable, "-m", "platform.run", *SMOKE, "--workers", "0", "--storage", str(storage), "--name", "killed"]
    driver = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not any(c.startswith("epoch_0002-") for c in storage.checkpoints("asl", "killed")) and time.monotonic() < deadline:
        if driver.poll() is not None:
            break
        time.sleep(0.2)
    assert driver.poll() is None, "the driver ended before it could be killed"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert _manifest(storage.files("asl", "killed"))["status"] == "running"
    watched = run_command("monitor", storage.run("asl", "killed"))
    assert "asl/killed  [interrupted]" in watched.stdout and f"--storage {storage} --name killed --resume" in watched.stdout

    # The crash tore the run's own files; on s3 the resume runs on a machine without the run's mirror.
    for name in ("config.json", "meta.json", "manifest.json"):
        storage.write("asl", "killed", name, b'{"stem": "asl", "tier')
    if storage.is_uri:
        shutil.rmtree(storage_lib.mirror_root(str(storage)))
    resumed = run_command("run", "asl", "--workers", "0", "--storage", str(storage), "--name", "killed", "--resume", address=ray_address)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    for name in ("config.json", "meta.json", "manifest.json"):  # each written again from the newest checkpoint
        assert f"{name} is unreadable (JSONDecodeError)" in resumed.stderr, resumed.stderr[-3000:]
    run_dir = storage.files("asl", "killed")
    manifest = _manifest(run_dir)
    assert manifest["status"] == "finished" and manifest["resumes"] == 1 and manifest["tier"] == "smoke"
    assert json.loads((run_dir / "config.json").read_text()) == json.loads((plain_run[0] / "config.json").read_text())
    assert manifest["training"]["restarts"] >= 1
    assert _history(run_dir) == _history(plain_run[0])
    # Ray Train's record of the run is its own: every checkpoint it lists exists (a stale copy
    # uploaded with the run's files would list checkpoints it pruned since).
    recorded = [row["dir"] for row in checkpoints.recorded(checkpoints.read_snapshot(storage.run("asl", "killed")))]
    assert recorded and set(recorded) <= set(storage.checkpoints("asl", "killed"))


def test_monitor_with_an_address_shows_the_cluster_and_its_training_worker(ray_address, local_runs):
    import ray

    dashboard = f"http://{ray._private.worker.get_dashboard_url()}"  # noqa: SLF001 - the session's own Ray
    run_dir = local_runs / "asl" / "watched"
    env = {**os.environ, **TEST_ENV, "RAY_ADDRESS": ray_address}
    command = [
        sys.executable,
        "-m",
        "platform.run",
        "asl",
        "--tier",
        "smoke",
        "--set",
        "epochs=400",
        "--storage",
        str(local_runs),
        "--name",
        "watched",
    ]
    driver = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list(run_dir.glob("epoch_0002-*")) and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.2)
        watched = run_command("monitor", str(run_dir), "--address", dashboard)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert watched.returncode == 0, watched.stderr
    assert "asl/watched  [running]" in watched.stdout and f"cluster {dashboard}" in watched.stdout
    assert "head [ALIVE]  CPU 2" in watched.stdout and "training workers 1 (pids " in watched.stdout
    assert "Ray Train runs in progress: 1" in watched.stdout


def test_monitor_with_a_wrong_address_says_so_in_one_line():
    result = run_command("monitor", "--address", "http://127.0.0.1:9")
    assert result.returncode == 2 and result.stderr.startswith("error: --address http://127.0.0.1:9: no Ray dashboard")
    assert len(result.stderr.strip().splitlines()) == 1


def test_real_asl_sample_trains_with_classes_from_its_map(ray_address, local_runs):
    data = shared_dataset("asl")
    result = run_command(
        "run",
        "asl",
        "--tier",
        "smoke",
        "--data",
        str(data),
        "--storage",
        str(local_runs),
        "--name",
        "real",
        address=ray_address,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    manifest = _manifest(local_runs / "asl" / "real")
    assert manifest["data"]["classes"] == ["hello", "thankyou"]
    assert manifest["data"]["rows"]["train"] + manifest["data"]["rows"]["val"] == 16


def test_an_existing_run_is_never_overwritten(plain_run, storage):
    before = storage.contents("asl", "plain")
    result = run_command("run", *SMOKE, "--storage", str(storage), "--name", "plain")
    assert result.returncode == 2
    assert last_line(result.stderr).startswith("error: run ") and "already exists" in result.stderr
    assert storage.contents("asl", "plain") == before


@pytest.fixture(scope="module")
def kaggle_copy(tmp_path_factory) -> Path:
    """A small synthetic set in the Kaggle layout, copied so each test can break it."""
    from platform import registry
    from trainables import asl

    source = asl.synthetic_dataset(registry.resolve("asl", "smoke"))
    target = tmp_path_factory.mktemp("kaggle") / "asl-signs"
    shutil.copytree(source, target)
    return target


def _break_train_csv(folder: Path) -> str:
    table = pd.read_csv(folder / "train.csv").drop(columns=["sign"])
    table.to_csv(folder / "train.csv", index=False)
    return "train.csv"


def _first_sequence(folder: Path) -> Path:
    return folder / pd.read_csv(folder / "train.csv")["path"].iloc[0]


def _remove_a_parquet(folder: Path) -> str:
    path = _first_sequence(folder)
    path.unlink()
    return path.name


def _corrupt_a_parquet(folder: Path) -> str:
    path = _first_sequence(folder)
    path.write_bytes(b"PAR1 this is not a parquet file")
    return path.name


def _remove_the_hands(folder: Path) -> str:
    path = _first_sequence(folder)
    table = pd.read_parquet(path)
    hands = table["type"].isin(["left_hand", "right_hand"])
    table.loc[hands, ["x", "y", "z"]] = float("nan")
    table.to_parquet(path)
    return path.name


@pytest.mark.parametrize("breaker", [_break_train_csv, _remove_a_parquet, _corrupt_a_parquet, _remove_the_hands])
def test_malformed_data_ends_with_one_line_naming_the_file(breaker, kaggle_copy, ray_address, local_runs, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(kaggle_copy, folder)
    named = breaker(folder)
    result = run_command(
        "run",
        "asl",
        "--tier",
        "smoke",
        "--data",
        str(folder),
        "--storage",
        str(local_runs),
        "--name",
        breaker.__name__,
        address=ray_address,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert last_line(result.stderr).startswith("error: ") and named in last_line(result.stderr)
    assert "Traceback" not in result.stderr
    assert not (local_runs / "asl" / breaker.__name__).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch"], "error: unknown trainable 'nosuch'"),
        (["asl", "--tier", "huge"], "error: unknown tier 'huge' for asl"),
        (["asl", "--set", "depth=3"], "error: unknown config key 'depth' in --set"),
        (["asl", "--set", "epochs=many"], "error: config key 'epochs' expects int"),
        (["asl", "--set", "epochs=-3"], "error: config key 'epochs' must be >= 1, not -3"),
        (["asl", "--set", "lr=nan"], "error: config key 'lr' must be a finite number"),
        (["asl", "--set", "scheduler=linear"], "error: config key 'scheduler' expects"),
        (["asl", "--data", "/no/such/folder"], "error: data folder not found: /no/such/folder"),
        (["asl", "--resume", "--name", "never-ran"], "error: nothing to resume at"),
    ],
)
def test_bad_arguments_end_with_one_error_line(args, message, tmp_path):
    result = run_command("run", *args, "--storage", str(tmp_path))
    assert result.returncode == 2
    assert last_line(result.stderr).startswith(message)
    assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


def test_gpu_request_without_gpus_is_an_error(ray_address, tmp_path):
    result = run_command("run", "asl", "--tier", "smoke", "--gpu", "--storage", str(tmp_path), address=ray_address)
    assert result.returncode == 2
    assert last_line(result.stderr) == "error: --gpu asks for 1 GPU(s); the Ray cluster has 0"


def test_more_workers_than_the_cluster_has_cpus_is_one_line(ray_address, tmp_path):
    result = run_command("run", "asl", "--tier", "smoke", "--workers", "5", "--storage", str(tmp_path), address=ray_address)
    assert result.returncode == 2
    assert last_line(result.stderr) == "error: --workers 5 needs 5 CPUs; the Ray cluster has 2"
    assert not any(tmp_path.iterdir())


def test_a_shape_error_in_the_config_is_reported_before_training(ray_address, tmp_path):
    result = run_command("run", "asl", "--tier", "smoke", "--set", "heads=5", "--storage", str(tmp_path), address=ray_address)
    assert result.returncode == 2
    assert last_line(result.stderr).startswith("error: config key 'dim' (32) must be even and divisible by heads (5)")
    assert not any(tmp_path.iterdir())


def test_help_lists_trainables_tiers_and_config_keys():
    result = run_command("run", "asl", "--help")
    assert result.returncode == 0
    assert "trainables: " in result.stdout and "asl" in result.stdout
    tiers = result.stdout.split("tiers of asl")[1].split("config keys of asl")[0].splitlines()[1:]
    assert [line.split(":")[0].strip() for line in tiers] == ["smoke", "fast", "standard", "full"]
    assert "max_len=32" in tiers[0] and tiers[-1].endswith("full: the defaults")
    assert "max_len = 384" in result.stdout and "Peak learning rate (AdamW)." in result.stdout


def test_a_user_error_in_a_worker_ends_the_run_without_a_retry(ray_address, local_runs, tmp_path, monkeypatch):
    # lr 1e30: the first step blows the weights up, the second batch's loss is NaN, inside the worker.
    monkeypatch.setenv("RAYPLATFORM_TRACE_DIR", str(tmp_path))  # one trace file a worker process
    result = run_command(
        "run",
        "asl",
        "--tier",
        "smoke",
        "--set",
        "lr=1e30",
        "--set",
        "epochs=3",
        "--storage",
        str(local_runs),
        "--name",
        "diverges",
        address=ray_address,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert last_line(result.stderr).startswith("error: the training loss is nan in epoch 1, batch 2")
    assert len(list(tmp_path.glob("rank0-*.jsonl"))) == 1, "the worker was started again for an error that repeats"
    assert _manifest(local_runs / "asl" / "diverges")["status"] == "failed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpu"], "error: this run trained without --gpu: a resume keeps it (drop --gpu)"),
        (["--cpus-per-worker", "1"], "error: this run trained with --cpus-per-worker 2: a resume on 1 worker(s) keeps it"),
    ],
)
def test_a_resume_on_other_devices_or_threads_is_refused_before_anything_is_written(plain_run, storage, args, message):
    before = storage.contents("asl", "plain")
    result = run_command("run", "asl", "--storage", str(storage), "--name", "plain", "--resume", *args)
    assert result.returncode == 2 and last_line(result.stderr).startswith(message), result.stderr[-3000:]
    assert storage.contents("asl", "plain") == before


def test_a_resume_on_changed_data_is_refused_before_anything_is_written(plain_run, storage, ray_address):
    run_dir, _stdout = plain_run
    for name in ("config.json", "manifest.json"):
        storage.write("asl", "changed-data", name, (run_dir / name).read_bytes())
    meta = json.loads((run_dir / "meta.json").read_text())
    storage.write("asl", "changed-data", "meta.json", json.dumps({**meta, "content_hash": "sha256:another"}).encode())
    before = storage.contents("asl", "changed-data")
    result = run_command("run", "asl", "--storage", str(storage), "--name", "changed-data", "--resume", address=ray_address)
    assert result.returncode == 2, result.stderr[-3000:]
    assert last_line(result.stderr).startswith("error: the data changed since this run started (its content_hash differs")
    assert storage.contents("asl", "changed-data") == before
