"""Preemption: a SIGTERM to the driver or to a Train worker becomes a checkpoint at the next step.

Used by ``python -m platform.run asl``: a spot instance's preemption notice (a SIGTERM) costs no
work. The driver's handler asks the workers, through a small actor (:class:`Notice`), for a
checkpoint; it waits for it, marks the run interrupted and exits (``--resume`` continues from
that step: the workers train no further meanwhile). A worker's SIGTERM is kept from ending the
process until that worker has reported its checkpoint; then it exits and Ray Train restarts from
that checkpoint.

In local mode (``--workers 0``) the loop runs in the driver's main thread, under the handler, which
so cannot wait for it: :func:`install_local_handler` only asks (the flag a worker's own SIGTERM sets),
and the loop, once its checkpoint is recorded, marks the run interrupted and exits 143 itself.

Ray's own worker handler exits at once (``ray._private.worker.main_loop``), and a handler can only
be installed from a process's main thread, which a Train worker's loop is not: so the worker side
replaces the function Ray's handler calls (Ray is pinned below the next minor version for this).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

POLL_S = 0.2
DRIVER_WAIT_S = 120.0
_signalled = threading.Event()
# Local mode: what the driver does with the checkpoint its SIGTERM asked for (install_local_handler).
_local_answer: list[Callable[[str | None], None]] = []


@ray.remote(num_cpus=0)
class Notice:
    """The driver's request for a checkpoint, and the workers' answer: the first preemption
    checkpoint reported after the request. One reported before it (a worker's own SIGTERM, earlier
    in the run) is not the answer: the driver would end the run there and lose the steps since.
    One a worker's SIGTERM took as the driver's request arrived is: the actor's calls are in order."""

    def __init__(self):
        self.requested, self.saved = False, None

    def request(self) -> None:
        self.requested = True

    def is_requested(self) -> bool:
        return self.requested

    def checkpointed(self, where: str) -> None:
        if self.requested and self.saved is None:
            self.saved = where

    def saved_at(self) -> str | None:
        return self.saved


# ---------------------------------------------------------------- in a Train worker


def watch(notice) -> Callable[[], bool]:
    """In a worker: whether a checkpoint was asked for, by this process's SIGTERM or the driver.
    The driver's notice is polled by a background thread, never on the training step."""
    import ray._private.worker as ray_worker

    if not getattr(ray_worker, "_rayplatform_patched", False):
        ray_worker.raise_sys_exit_with_custom_error_message = _defer_exit(ray_worker.raise_sys_exit_with_custom_error_message)
        ray_worker._rayplatform_patched = True
    asked = threading.Event()

    def poll() -> None:
        while not asked.is_set():
            try:
                if ray.get(notice.is_requested.remote(), timeout=10):
                    asked.set()
            except Exception:  # noqa: BLE001 - the driver is gone: it will not ask
                return
            time.sleep(POLL_S)

    if notice is not None:
        threading.Thread(target=poll, daemon=True, name="rayplatform-preempt").start()
    return lambda: _signalled.is_set() or asked.is_set()


def _defer_exit(original: Callable) -> Callable:
    def deferred(message: str, exit_code: int = 1) -> None:
        if "SIGTERM" not in message:
            original(message, exit_code)
            return
        _signalled.set()  # the training thread checkpoints at its next step, then exits

    return deferred


def answer(notice, snapshot_uri: str, name: str) -> None:
    """In rank 0, after reporting the checkpoint a preemption asked for: wait until Ray Train has
    recorded it, then tell the driver's :class:`Notice`, which takes it if it came after its request."""
    wait_registered(snapshot_uri, name)
    if notice is not None:
        ray.get(notice.checkpointed.remote(name))


def wait_registered(snapshot_uri: str, name: str, timeout: float = 60.0) -> bool:
    """Until Ray Train's controller has recorded checkpoint ``name`` in its snapshot: a worker or
    driver that ends right after ``report`` returns could otherwise lose it."""
    from platform.data.store import filesystem

    fs, path = filesystem(snapshot_uri)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with fs.open_input_stream(path) as stream:
                if name in stream.read().decode("utf-8", "replace"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def exit_or_hold(say: Callable[[str], None], saved: str | None = None) -> None:
    """After the checkpoint ``saved`` a SIGTERM asked for. This worker's own: end it as the signal
    meant to. The driver's: train no further until the driver's exit ends the run, since a later
    checkpoint recorded meanwhile would make ``--resume`` start elsewhere than the driver said.
    Local mode's: the driver's answer, here, and its exit."""
    if _local_answer:
        _end_local(saved)
    if _signalled.is_set():
        say("preempted: checkpoint written, worker exits (SIGTERM)")
        sys.stdout.flush()
        os._exit(143)
    say("preempted: checkpoint written, waiting for the driver to end the run")
    while True:
        time.sleep(POLL_S)


# ---------------------------------------------------------------- in the driver


def install_driver_handler(notice, on_checkpoint: Callable[[str | None], None]) -> Any:
    """SIGTERM in the driver: ask for a checkpoint, wait for it, report it, exit 143. Returns the
    handler it replaced, for a driver that outlives the run (a notebook) to put back."""

    def handler(signum, frame) -> None:
        print("[preempt] SIGTERM: asking the workers for a checkpoint at their next step", flush=True)
        on_checkpoint(requested_checkpoint(notice))
        sys.stdout.flush()
        os._exit(143)

    return signal.signal(signal.SIGTERM, handler)


def install_local_handler(on_checkpoint: Callable[[str | None], None]) -> Any:
    """Local mode's SIGTERM: ask the loop for a checkpoint at its next step and return to it; the
    loop ends the run (:func:`exit_or_hold`). One it cannot take (past its last step: validating,
    writing the finished run) ends it without a checkpoint after ``DRIVER_WAIT_S``, as the driver's
    wait does. Returns the handler it replaced."""
    _signalled.clear()
    _local_answer[:] = [on_checkpoint]

    def handler(signum, frame) -> None:
        print("[preempt] SIGTERM: a checkpoint at the next step (local mode)", flush=True)
        _signalled.set()
        threading.Thread(target=_end_local_later, args=(on_checkpoint,), daemon=True, name="rayplatform-preempt").start()

    return signal.signal(signal.SIGTERM, handler)


def _end_local_later(asked_by: Callable[[str | None], None]) -> None:
    time.sleep(DRIVER_WAIT_S)
    if _local_answer and _local_answer[0] is asked_by:  # still training the run the signal came to, not a later one
        _end_local(None)


_ending = threading.Lock()


def _end_local(saved: str | None) -> None:
    """The run's end after its SIGTERM, once: the timer and the loop may both come."""
    if not _ending.acquire(blocking=False):
        threading.Event().wait()  # the other is ending the process
    _local_answer[0](saved)
    sys.stdout.flush()
    os._exit(143)


def uninstall_driver_handler(notice, replaced: Any) -> None:
    """The run is over, and its driver may go on (a notebook): the SIGTERM handler that
    :func:`install_driver_handler` replaced is back and the notice is gone, not left to each run."""
    if replaced is not None:  # None: the replaced handler was not Python's to put back
        signal.signal(signal.SIGTERM, replaced)
    _local_answer.clear()
    if notice is None:  # local mode's run has none
        return
    try:
        ray.kill(notice)
    except Exception:  # noqa: BLE001 - Ray is gone (a Ctrl-C can end it first): so is the actor
        pass


def requested_checkpoint(notice, timeout: float = DRIVER_WAIT_S) -> str | None:
    """Ask the workers for a checkpoint; the name of the one they took for this request, or None
    when none came within ``timeout`` seconds."""
    notice.request.remote()
    deadline = time.monotonic() + timeout
    saved = None
    while saved is None and time.monotonic() < deadline:
        time.sleep(0.2)
        saved = ray.get(notice.saved_at.remote())
    return saved
