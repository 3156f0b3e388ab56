"""The API key: read from the environment of each process that uses it, never handed to Ray.

Used by ``OPENROUTER_API_KEY=... python -m platform.label posts.csv`` (the driver checks that a key
is set) and by its Labeler actors (which send it). Whatever the driver hands to Ray (an actor's
constructor arguments, a ``ray.put``, a task's arguments) is pickled into the object store, from
where Ray may spill it to disk or send it to another node unencrypted; a ``runtime_env`` is shown by
the dashboard. So the actors read the key from their own environment, which Ray workers inherit
from the raylet of their node:

- a local Ray that ``platform.label`` starts itself: that raylet is the driver's child and has the
  driver's environment, key included: nothing to do;
- a cluster (``--address``, ``RAY_ADDRESS``, ``ray job submit``): set ``OPENROUTER_API_KEY`` (or
  ``OPENAI_API_KEY``) in the environment ``ray start`` runs in on every node (the node image or
  its secret store, or an ``export`` in front of ``ray start`` in the cluster's start commands), and
  never in a ``runtime_env`` (``env_vars``) or a job's submission.

The driver hands the actors only a digest of its own key: an actor that sees another key, or none,
stops the job with one error line rather than charging another account.
"""

from __future__ import annotations

import hashlib
import os

KEY_VARIABLES = ("OPENROUTER_API_KEY", "OPENAI_API_KEY")


def read() -> str | None:
    """This process's key: the first of KEY_VARIABLES that is set and not empty."""
    return next((os.environ[v] for v in KEY_VARIABLES if os.environ.get(v)), None)


def digest(key: str) -> str:
    """A short fingerprint of a key: tells two keys apart and cannot be turned back into one."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def problem(expected_digest: str) -> str | None:
    """Why this process cannot send the driver's key (its digest ``expected_digest``), else ``None``."""
    key = read()
    if key is not None and digest(key) == expected_digest:
        return None
    seen = "no API key" if key is None else "another API key than the driver's"
    return (
        f"the Ray workers have {seen} in their environment: on a cluster, set {KEY_VARIABLES[0]} (or "
        f"{KEY_VARIABLES[1]}) where `ray start` runs on every node, never in a runtime_env "
        "(see platform/label/secret.py)"
    )
