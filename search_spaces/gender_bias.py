"""Tiers and hyperparameter search space of the gender-bias scorer (``trainables/gender_bias/``).

Used by ``python -m platform.run gender_bias --tier fast [--data DIR]`` and
``python -m platform.tune gender_bias --tiers smoke fast``.

Tiers (measured on a 2-core CPU shared with other jobs, synthetic data, one worker; writing a
synthetic set happens once; times vary about 3x with the machine's load):

- ``smoke``: CI. 64 posts, 32 px images, a tiny random BERT (6 layers of 64) over 16 tokens,
  ResNet18 from scratch (13.4M parameters), 2 epochs: 1-3 s an epoch (10-15 s on a loaded machine),
  11-27 s to preprocess (mostly Ray Data and transformers starting), 80 s for the whole command
  on a loaded machine (27 s from the first epoch to the exported model); checkpoints are 138 MB.
  Too few steps to learn (val/mae stays near 3): it checks the plumbing.
- ``ultra-fast``: the seed's ``ultra-fast`` mode: at most 2,000 posts (``max_samples``), 64 px,
  32 tokens, all-MiniLM-L6-v2 with 4 of its 6 layers frozen (33.9M parameters, 14.8M trained),
  4 epochs: 600 synthetic posts take 30-100 s an epoch, 6 minutes in all; val/mae 0.56 (the
  scores' spread is 3.2), Pearson 0.97.
- ``fast``: the seed's ``fast`` mode: at most 5,000 posts, 96 px, 48 tokens, 3 layers frozen,
  6 epochs, patience 2: 1,000 synthetic posts take about 170 s an epoch with the machine loaded
  (load average 19 on 2 cores; 47 s to preprocess), so 10-17 minutes; val/mae 0.83 after one epoch.
- ``standard``: the seed's ``standard`` mode: every post, 160 px, 64 tokens, 6 epochs (not timed
  here: its 2,000 synthetic posts at 160 px should take about 5x the fast tier's epoch).
- ``full``: the seed's recipe (``Config`` defaults): every post, 224 px, 128 tokens, 3 of 6
  text layers frozen, AdamW lr 5e-4, batch 32, 6 epochs with a cosine schedule, patience 2. Meant
  for a GPU and the labeled data (``--data``).

Not measured on real data: the shared sample (``../shared/datasets/social``, 80 posts) has no bias
scores, which come from ``python -m platform.label`` and an API key; the tiers above are measured on
the synthetic set only.

The seed's modes differ in how many posts they train on (2K, 5K, all). Two of their names are
tier names here, and the platform looks an alias up before the tiers, so ``fast`` and ``standard``
*are* the seed's modes (with their caps) rather than aliases, and ``ultra-fast`` is a tier of its
own; each also scales the resolution and sequence length so that it fits its time on a CPU. For
the seed's exact mode on the full recipe: ``--tier full --set max_samples=5000``. Without
``--data`` the cap applies to the synthetic set, whose size each tier sets.
"""

from platform.tune.distributions import choice, loguniform, randint, uniform

# A tier's keys stay grouped by line (data, model, schedule), so tiers read side by side.
# fmt: off
TIERS = {
    "smoke": {
        "synthetic_samples": 64, "image_size": 32, "max_tokens": 16, "text_model": "tiny", "frozen_layers": 1,
        "image_weights": "none", "fusion_dim": 32, "dropout": 0.1,
        "epochs": 2, "batch_size": 16, "lr": 2e-3, "patience": 0,
    },
    "ultra-fast": {
        "max_samples": 2000, "synthetic_samples": 600, "image_size": 64, "max_tokens": 32, "frozen_layers": 4,
        "fusion_dim": 128, "epochs": 4, "lr": 1e-3,
    },
    "fast": {
        "max_samples": 5000, "synthetic_samples": 1000, "image_size": 96, "max_tokens": 48, "frozen_layers": 3,
        "fusion_dim": 128, "epochs": 6, "lr": 1e-3,
    },
    "standard": {
        "max_samples": 0, "synthetic_samples": 2000, "image_size": 160, "max_tokens": 64,
    },
    "full": {},
}
# fmt: on

ALIASES: dict[str, str] = {}  # the seed's mode names are tiers themselves (see above)

SPACE = {
    "lr": loguniform(1e-4, 3e-3),
    "weight_decay": loguniform(1e-4, 1e-1),
    "dropout": uniform(0.0, 0.5),
    "frozen_layers": randint(0, 7),  # 0..6: MiniLM and DistilBERT have 6 layers
    "fusion_dim": choice([64, 128, 256, 512]),
}
