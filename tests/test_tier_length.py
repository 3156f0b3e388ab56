"""A tier's length in optimizer steps (``min_steps``): ``platform/config.py`` ``fit_to_data``, as
``python -m platform.run asl --tier fast --data DIR`` and every sweep trial apply it once the data
is known. Pure logic, without Ray:

    .venv/bin/python -m pytest tests/test_tier_length.py
"""

from __future__ import annotations

import pytest

from platform import config as config_lib
from platform import registry


def fast(*sets: str):
    return registry.resolve("asl", "fast", list(sets))


def test_the_synthetic_set_a_tier_was_measured_on_keeps_its_epochs():
    cfg = fast()
    assert (cfg.epochs, cfg.min_steps) == (10, 150)
    assert config_lib.fit_to_data(cfg, 480, workers=1) == (cfg, None)  # 15 steps an epoch


@pytest.mark.parametrize(
    ("rows", "workers", "sets", "epochs", "patience"),
    [
        (446, 1, [], 11, 5),  # the 558 real sequences, 80% to train: 14 steps an epoch
        (12, 1, [], 150, 60),  # the 16-sequence real sample: one step an epoch
        (446, 2, [], 22, 9),  # two workers: half the steps an epoch
        (446, 1, ["grad_accum_steps=2"], 22, 9),  # two batches a step
    ],
)
def test_a_smaller_set_trains_the_tier_s_steps_in_more_epochs_with_patience_grown_alike(rows, workers, sets, epochs, patience):
    grown, note = config_lib.fit_to_data(fast(*sets), rows, workers)
    assert (grown.epochs, grown.patience) == (epochs, patience)
    assert note.startswith(f"min_steps 150: {epochs} epochs of ") and f"patience {patience} instead of 4" in note


def test_without_min_steps_epochs_alone_set_the_length():
    cfg = fast("min_steps=0")
    assert config_lib.fit_to_data(cfg, 12, workers=1) == (cfg, None)
    smoke = registry.resolve("asl", "smoke")
    assert config_lib.fit_to_data(smoke, 12, workers=1) == (smoke, None)  # CI stays seconds
