"""Tiers and hyperparameter search space of the MELD emotion classifier (``trainables/emotion/``).

Used by ``python -m platform.run emotion --tier fast [--data DIR]`` and
``python -m platform.tune emotion --tiers smoke fast``.

Tiers (measured on a 2-core CPU heavily shared with other jobs, load average 20-50, so expect
several times faster on a quiet machine; synthetic data, one worker; writing the synthetic set and
decoding its clips happen once, later runs read the platform's preprocessed cache):

- ``smoke``: CI. 60 one-second synthetic clips, 2 frames of 32 px, 32 mel bands, a tiny random
  BERT over 16 tokens, a narrow audio CNN, ResNet18 from scratch (13.4M parameters, a 54 MB
  best_model.pt), 2 epochs: 9-28 s an epoch, 30-55 s to write the set and decode its clips, about 3
  minutes for the whole command at that load. Too few steps to learn: it checks the plumbing.
  With ``--data`` it reads 300 rows of each CSV (``max_rows``): on the shared MELD text 61 s in all
  (2026-12-03), val weighted F1 0.057 against the majority class's 0.382, test 0.032 (0.206), and
  the run ends with the baseline warning; every row took 22 minutes.
- ``fast``: 600 synthetic clips, 4 frames of 64 px, all-MiniLM-L6-v2 with 4 of 6 layers frozen,
  1 s of audio, concatenation fusion, 4 epochs (34.0M parameters): 33 s to write the set, 91 s to decode it,
  155-167 s an epoch; val weighted F1 0.41 after one epoch and 0.67 after two (test 0.69; chance
  with MELD's imbalance is about 0.3), so about 12 minutes at that load.
- ``fast_text``: text only, for the real MELD text (``--data MELD_DIR``, clips not needed): each
  utterance read after the 2 previous utterances of its dialogue, speaker-tagged
  (``context_turns=2``, 48 tokens, the context cut first), all 6 of MiniLM's layers trained
  (``frozen_layers=0``), square-root inverse-frequency class weights (``balance=sqrt_weights``:
  full inverse-frequency weights serve macro F1 and cost weighted F1), AdamW lr 5e-5 over two
  epochs (cosine: the second at half of it), batch 16, emotion head only. Measured with
  ``python -m platform.run emotion --tier fast_text --data ../shared/datasets/meld`` on a quiet
  2-core CPU (2026-12-03): the shared real MELD text (train 9,989 utterances, dev 1,109; no test
  CSV, so val is 876 utterances of train's held-out dialogues and dev is the test split, scored
  once), 7.8 minutes an epoch, about 18 minutes in all. Val weighted F1 0.637 after the first epoch,
  0.646 after the second; **dev (test) weighted F1 0.581**, accuracy 0.599, macro F1 0.424
  (majority class: val 0.316, dev 0.252). The earlier recipe (4 of 6 layers trained, lr 8e-5, one
  epoch, measured in a plain loop) reached dev 0.534. Issue #18's target, dev weighted F1 > 0.60, is
  not reached yet. The fine-tuning schedule of published recipes, stepped every optimizer step
  (``--set scheduler=linear_warmup --set epochs=3``: 10% warm-up, then linear decay), measured the
  same way: val 0.636, 0.653, 0.632, dev **0.575** (best val at epoch 2): a better val, no better
  dev, so the tier keeps its per-epoch cosine. More context and the sentiment head as a second task
  (``--set context_turns=4 --set max_tokens=64 --set tasks=emotion,sentiment``, 2026-12-03, with
  other work beside it, 26-31 minutes an epoch): val 0.636, 0.639, dev **0.573**, accuracy 0.592,
  macro F1 0.399: no better either. No class weights (``--set balance=none``, 2026-12-03, a quiet
  machine, 4 minutes an epoch): val 0.627 at epoch 2, dev **0.553**, accuracy 0.597, macro F1
  0.354: the square-root weights serve weighted F1 better. A third epoch, the cosine stretched over
  three (``--set epochs=3``, 2026-12-03, 4 minutes an epoch, the first 8 beside a test run): val
  0.637, 0.639, 0.626, dev **0.577**, accuracy 0.593, macro F1 0.436 (best val at epoch 2): the
  third epoch overfits. The next utterance too, after "Next:" at the context's end (a one-off
  change of ``dialogue_inputs``, ``--set max_tokens=64``, 2026-12-03, 5 minutes an epoch; EmoBERTa
  reads the dialogue both ways): val 0.648, 0.648, dev **0.562**, macro F1 0.377: a better val
  again and a worse dev, so it was not kept.
- ``standard``: 2,000 synthetic clips (or every MELD row), 4 frames of 112 px, 3 s of audio,
  attention fusion, 8 epochs (not timed here).
- ``full``: the seed's recipe (``Config`` defaults): every row, BERT-like text encoder (MiniLM)
  with 3 layers frozen, VGGish-width audio CNN over 64 mel bands, the image encoder
  (``image_weights=auto``: ResNet18, or offline the packaged EfficientNet-Lite0) on 4 frames of 112 px,
  attention fusion, class-weighted loss on both heads, AdamW lr 2e-4, batch 16, 10 epochs, patience
  3. Meant for a GPU and the real MELD (``--data``).

The unimodal baselines are the same tiers with ``--set modalities=text`` (or ``text,audio``).
``ALIASES`` is empty: the seed script had a single recipe and no named modes.
"""

from platform.distributions import choice, loguniform, randint, uniform

# A tier's keys stay grouped by line (data, model, schedule), so tiers read side by side.
# fmt: off
TIERS = {
    "smoke": {
        "synthetic_clips": 60, "text_model": "tiny", "max_tokens": 16, "frozen_layers": 1, "image_weights": "none",
        "audio_width": 4, "sample_rate": 8000, "n_mels": 32, "audio_seconds": 1.0, "frames": 2, "frame_size": 32,
        "fusion_dim": 32, "dropout": 0.1, "epochs": 2, "batch_size": 16, "lr": 2e-3, "patience": 0,
        "max_rows": 300,  # of each real CSV (--data): seconds, not the 22 minutes all of MELD's text took
    },
    "fast": {
        "synthetic_clips": 600, "max_tokens": 32, "frozen_layers": 4, "audio_width": 16, "n_mels": 40,
        "audio_seconds": 1.0, "frames": 4, "frame_size": 64, "fusion": "concat", "fusion_dim": 128,
        "epochs": 4, "batch_size": 32, "lr": 1e-3, "patience": 2,
    },
    # Text only, for the real MELD text (--data): dialogue context, all of MiniLM trained, sqrt class
    # weights, two epochs (measured in the docstring).
    "fast_text": {
        "modalities": "text", "tasks": "emotion", "context_turns": 2, "max_tokens": 48, "frozen_layers": 0,
        "balance": "sqrt_weights", "fusion": "concat", "fusion_dim": 128, "dropout": 0.1, "epochs": 2,
        "batch_size": 16, "lr": 5e-5, "patience": 0,
    },
    "standard": {
        "synthetic_clips": 2000, "audio_width": 32, "frames": 4, "frame_size": 112, "fusion_dim": 256,
        "epochs": 8, "lr": 5e-4, "patience": 3,
    },
    "full": {},
}
# fmt: on

ALIASES: dict[str, str] = {}

SPACE = {
    "lr": loguniform(5e-5, 3e-3),
    "weight_decay": loguniform(1e-4, 1e-1),
    "fusion": choice(["concat", "attention"]),
    "dropout": uniform(0.0, 0.5),
    "modality_dropout": uniform(0.0, 0.4),
    "balance": choice(["weights", "sqrt_weights", "oversample", "none"]),
    "context_turns": choice([0, 1, 2, 4]),
    "sentiment_weight": uniform(0.0, 1.0),
    "frozen_layers": randint(0, 7),  # 0..6: MiniLM has 6 layers
}
