"""Preemption's two sides on a real Ray: the driver's request and a Train worker's answer to it.

    flock /tmp/rayplatform-heavy.lock .venv/bin/python -m pytest tests/test_preempt.py

Each "worker" is a Ray actor in its own process, with Ray's own SIGTERM handler and the
real ``preempt.watch``; the run end to end is in tests/test_resume.py.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time

import pytest

from platform.train import preempt


def _worker_class():
    """Defined here so that Ray sends it by value: the test module is not importable in a worker."""
    import os
    import signal

    import ray

    @ray.remote(num_cpus=0)
    class Worker:
        def __init__(self, notice, snapshot: str):
            self.notice, self.snapshot = notice, snapshot
            self.preempted = preempt.watch(notice)

        def sigterm(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)

        def step(self, name: str) -> bool:
            """A training step: the checkpoint a preemption asks for, answered as rank 0 does."""
            asked = self.preempted()
            if asked:
                preempt.answer(self.notice, self.snapshot, name)
            return asked

    return Worker


@pytest.fixture
def snapshot(tmp_path):
    """Ray Train's record of the checkpoints the tests name, which ``answer`` waits for."""
    path = tmp_path / "checkpoint_manager_snapshot.json"
    names = ["epoch_0002-step_0000013-attempt_0", "epoch_0005-step_0000041-attempt_1"]
    path.write_text(json.dumps({"checkpoint_results": [{"checkpoint_dir_name": name} for name in names]}))
    return str(path)


def test_a_driver_sigterm_after_a_worker_preemption_waits_for_a_new_checkpoint(ray_address, snapshot):
    import ray

    worker_class = _worker_class()
    notice = preempt.Notice.remote()
    first = worker_class.remote(notice, snapshot)
    ray.get(first.sigterm.remote())  # the worker's own preemption: its checkpoint, then its exit
    assert ray.get(first.step.remote("epoch_0002-step_0000013-attempt_0"))
    ray.kill(first)
    restarted = worker_class.remote(notice, snapshot)  # Ray Train restarts it from that checkpoint
    assert not ray.get(restarted.step.remote("not-a-checkpoint"))

    answered: list[str | None] = []
    driver = threading.Thread(target=lambda: answered.append(preempt.requested_checkpoint(notice, timeout=60)))
    driver.start()  # the driver's SIGTERM, later
    time.sleep(2 * preempt.POLL_S)
    assert not answered, "the driver took the checkpoint from before its request"
    deadline = time.monotonic() + 60
    while not ray.get(restarted.step.remote("epoch_0005-step_0000041-attempt_1")):
        assert time.monotonic() < deadline, "the worker never saw the driver's request"
    driver.join(timeout=60)
    assert answered == ["epoch_0005-step_0000041-attempt_1"]
    ray.kill(restarted)
    ray.kill(notice)


def test_a_worker_sigterm_that_comes_with_the_drivers_is_the_drivers_answer(ray_address, snapshot):
    """A machine shutting down signals the driver and the worker at once: the worker's own checkpoint,
    taken before its poll saw the driver's request, still answers it."""
    import ray

    notice = preempt.Notice.remote()
    worker = _worker_class().remote(notice, snapshot)
    ray.get(notice.request.remote())  # the driver's request has reached the notice...
    ray.get(worker.sigterm.remote())  # ...and the worker's own SIGTERM comes at once
    assert ray.get(worker.step.remote("epoch_0005-step_0000041-attempt_1"))
    assert preempt.requested_checkpoint(notice, timeout=5) == "epoch_0005-step_0000041-attempt_1"
    ray.kill(worker)
    ray.kill(notice)


def _alive(address: str, class_name: str) -> list:
    from ray.util.state import list_actors

    return list_actors(address=address, filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")], raise_on_missing_output=False)


# A run that fails: a finished run goes through the same ``finally`` blocks.
@pytest.mark.parametrize(("sets", "status"), [({"epochs": 1, "lr": 1e30}, "failed")], ids=["failed"])
def test_a_notebook_run_leaves_no_actor_of_its_own_and_its_signal_handlers_back(ray_address, tmp_path, sets, status):
    import signal

    import rayplatform

    handler, interrupt = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    before = len(_alive(ray_address, "Notice")) + len(_alive(ray_address, "TrainController"))
    ending = pytest.raises(Exception, match="the training loss is nan") if status == "failed" else contextlib.nullcontext()
    with ending:
        rayplatform.train("asl", tier="smoke", sets=sets, storage=str(tmp_path), name="notebook")
    assert json.loads((tmp_path / "asl" / "notebook" / "manifest.json").read_text())["status"] == status
    assert len(_alive(ray_address, "Notice")) == before == 0
    assert _alive(ray_address, "TrainController") == []  # Ray's Ctrl-C handler no longer keeps it
    assert signal.getsignal(signal.SIGTERM) is handler and signal.getsignal(signal.SIGINT) is interrupt
