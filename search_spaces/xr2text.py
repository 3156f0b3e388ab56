"""Tiers and hyperparameter search space of the X-ray report generator (``trainables/xr2text/``).

Used by ``python -m platform.run xr2text --tier fast [--data DIR]`` and
``python -m platform.tune xr2text --tiers smoke fast``.

Tiers (measured on a 2-core CPU heavily shared with other jobs, load average 15-35, synthetic
data, one worker; writing a synthetic set happens once; expect several times faster on an idle machine):

- ``smoke``: CI. 40 studies, 64 px, ResNet18 up to layer2 (random init), a 1-layer decoder of
  width 64, greedy decoding, 4 epochs with the curriculum compressed to unlock a stage each epoch
  (stages 0, 1, 2, 3), 0.77M parameters: 0.3-2 s an epoch at load 9 (5-15 s at load 15+), 11-16 s
  to preprocess, 57 s for the whole command with Ray starting (70-100 s loaded). It checks the plumbing,
  not the words (val BLEU-4 stays near 0).
- ``fast``: 400 studies, 96 px, the encoder up to stage 3 (``encoder_stages``: ResNet18's layer3,
  or offline EfficientNet-Lite0's block 11; measured with a random ResNet18), 2 decoder layers of
  128, beam 2, 10 epochs, stages unlocking at epochs 1, 3, 5, 3.4M parameters: 50-130 s an epoch loaded, 7 s idle, 30-50 s
  to preprocess. After 10 epochs: val BLEU-4 0.58, ROUGE-L 0.76 (test 0.56, 0.72; the synthetic
  reports are templated), and the reports follow the images: of 40 val studies, 40 name
  cardiomegaly exactly when their reference does, 37 a nodule, 36 an opacity.
- ``standard``: 1,000 studies, 160 px, the whole encoder, 3 layers of 256, beam 3, 20 epochs,
  stages at 2, 6, 12 (not timed here; meant for a GPU or a long CPU run).
- ``full``: the seed's recipe (``Config`` defaults): 224 px, 3 decoder layers of 512, 50 epochs,
  batch 4 with gradient accumulation 8 (32 a step), AdamW lr 1e-4, FP16 on a GPU, patience 999
  (early stopping off), every checkpoint kept (each 5th epoch, each new best by BLEU-4 + ROUGE-L,
  and the last; ``keep_checkpoints=0``), beam 3, curriculum stages unlocking at epochs 5, 15 and 30. Meant for a GPU and
  the real IU X-Ray data (``--data``); the seed's targets there: BLEU-4 0.14-0.18, ROUGE-L 0.30-0.36.

Not measured on real images: the shared IU X-Ray sample (``../shared/datasets/iu_xray``) holds
reports and no images. Beam search (``trainables/textgen.py``) ranks by GNMT's length penalty,
``length_penalty`` 1.0 by default (about the mean log-probability a word, as before); validation
and test also report CIDEr-D, ``distinct`` and ``vocab``, and a collapse ends the run with a warning.

``ALIASES`` is empty: the seed script had a single recipe and no named modes.
"""

from platform.tune.distributions import choice, loguniform, randint, uniform

# A tier's keys stay grouped by line (data, model, schedule), so tiers read side by side.
# fmt: off
TIERS = {
    "smoke": {
        "synthetic_studies": 40, "synthetic_image_size": 64, "image_size": 64, "image_weights": "none",
        "encoder_stages": 2, "d_model": 64, "heads": 4, "decoder_layers": 1, "max_tokens": 40,
        "min_word_count": 1, "beam_width": 1, "curriculum_epochs": (1, 2, 3),
        "epochs": 4, "batch_size": 8, "grad_accum_steps": 1, "lr": 2e-3, "patience": 0,
        "checkpoint_every": 100, "keep_checkpoints": 1, "val_fraction": 0.2, "test_fraction": 0.2,
    },
    "fast": {
        "synthetic_studies": 400, "synthetic_image_size": 128, "image_size": 96, "encoder_stages": 3,
        "d_model": 128, "heads": 4, "decoder_layers": 2, "max_tokens": 50, "min_word_count": 2,
        "beam_width": 2, "curriculum_epochs": (1, 3, 5),
        "epochs": 10, "batch_size": 16, "grad_accum_steps": 1, "lr": 1e-3, "patience": 0,
        "checkpoint_every": 100, "keep_checkpoints": 2,
    },
    "standard": {
        "synthetic_studies": 1000, "synthetic_image_size": 192, "image_size": 160,
        "d_model": 256, "decoder_layers": 3, "curriculum_epochs": (2, 6, 12),
        "epochs": 20, "batch_size": 16, "grad_accum_steps": 2, "lr": 3e-4, "patience": 0,
        "checkpoint_every": 5, "keep_checkpoints": 4,
    },
    "full": {},
}
# fmt: on

ALIASES: dict[str, str] = {}

SPACE = {
    "lr": loguniform(3e-5, 3e-3),
    "weight_decay": loguniform(1e-5, 5e-2),
    "decoder_layers": randint(1, 5),  # 1..4
    "dropout": uniform(0.0, 0.3),
    "label_smoothing": uniform(0.0, 0.15),
    "beam_width": choice([1, 2, 3, 4]),
    "length_penalty": uniform(0.0, 1.5),
}
