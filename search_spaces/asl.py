"""Tiers and hyperparameter search space of the ASL sign classifier (``trainables/asl.py``).

Used by ``python -m platform.run asl --tier fast`` and ``python -m platform.tune asl --tiers smoke fast``.

Tiers (measured on a 2-core CPU, synthetic data, one worker; writing a synthetic set happens once):

- ``smoke``: CI. 4 signs x 48 sequences, 32 frames, width 32 (62k parameters), 2 epochs:
  about 0.2 s an epoch, 0.5 s to write the set.
- ``fast``: the default demo. 10 signs x 600 sequences, 64 frames, width 96 (0.4M parameters),
  10 epochs: about 2.6 s an epoch, 8 s to write the set, 3 s to preprocess it; val/acc reaches
  about 0.93 (chance 0.10).
- ``standard``: 25 signs x 2000 sequences, 128 frames, width 128 (0.9M parameters), 30 epochs:
  about 35 s an epoch (under 20 minutes), 40 s to write the set; val/acc about 0.8 after 3 epochs.
- ``full``: the seed's recipe (``Config`` defaults): width 192 (2.0M parameters for the 250 Kaggle
  signs), 384 frames, 300 epochs of AdamW with cosine restarts, patience 20. Meant for a GPU and the
  real data (``--data``): on this CPU one batch of 32 takes about 4 s.

``fast`` and ``standard`` also state their length in optimizer steps (``min_steps``: what their
epochs make on their synthetic sets, 15 and 50 steps an epoch): a smaller real set trains as many
steps, in more epochs, with patience grown alike (``platform/config.py``, ``fit_to_data``), instead
of stopping while accuracy still rises. ``smoke`` stays a few seconds; ``full`` is the seed's own.

On the shared real sample (``--data ../shared/datasets/asl``: 16 sequences of 2 signs, 12 train and
4 val, 1-7 frames after the hands are trimmed), measured with ``rayplatform run asl --tier T --data
...`` on 2026-12-03 with another training beside it: ``smoke`` val/acc 0.75 against the majority
class's 0.50, 47 s; ``fast`` 1.00 (0.50), its 150 steps made 150 epochs of one step, stopped by its
grown patience at epoch 61, 166 s. Four val sequences cannot measure accuracy: this shows the real
files load, train and beat the baseline, not how well the tiers do on asl-signs.

``ALIASES`` is empty: the seed script had a single recipe and no named modes.
"""

from platform.tune.distributions import choice, loguniform, uniform

# The seed's schedules span 30 and 60 epochs; shorter tiers compress them into their epochs.
# A tier's keys stay grouped by line (data, model, schedule), so tiers read side by side.
# fmt: off
TIERS = {
    "smoke": {
        "synthetic_signs": 4, "synthetic_sequences": 48, "synthetic_frames": 24,
        "max_len": 32, "dim": 32, "heads": 4, "kernel_size": 5, "lstm_layers": 1,
        "conv_blocks": 1, "transformer_blocks": 1, "ffn_expand": 2,
        "epochs": 2, "batch_size": 16, "lr": 2e-3, "scheduler": "cosine", "patience": 0,
        "adaptive_dropout_epochs": 2, "late_dropout_epoch": 2,
    },
    "fast": {
        "synthetic_signs": 10, "synthetic_sequences": 600, "synthetic_frames": 40,
        "max_len": 64, "dim": 96, "kernel_size": 9, "lstm_layers": 1,
        "conv_blocks": 1, "transformer_blocks": 1, "ffn_expand": 2,
        "epochs": 10, "min_steps": 150, "batch_size": 32, "lr": 2e-3, "scheduler": "cosine", "patience": 4,
        "adaptive_dropout_end": 0.3, "adaptive_dropout_epochs": 10, "late_dropout_epoch": 10,
    },
    "standard": {
        "synthetic_signs": 25, "synthetic_sequences": 2000, "synthetic_frames": 48,
        "max_len": 128, "dim": 128, "kernel_size": 13,
        "epochs": 30, "min_steps": 1500, "lr": 1e-3, "scheduler": "cosine", "patience": 8,
        "adaptive_dropout_end": 0.4, "adaptive_dropout_epochs": 20, "late_dropout_epoch": 30,
    },
    "full": {},
}
# fmt: on

ALIASES: dict[str, str] = {}

SPACE = {
    "lr": loguniform(1e-4, 3e-3),
    "weight_decay": loguniform(1e-4, 5e-2),
    "dim": choice([64, 96, 128, 192]),
    "block_dropout": uniform(0.0, 0.3),
    "drop_path": uniform(0.0, 0.3),
    "adaptive_dropout_end": uniform(0.2, 0.6),
    "label_smoothing": uniform(0.0, 0.15),
}
