"""Tiers and hyperparameter search space of the image captioner (``trainables/captioning/``).

Used by ``python -m platform.run captioning --tier fast [--data DIR]`` and
``python -m platform.tune captioning --tiers smoke fast``.

The seed had three modes: minimal, fast and optimized. Its ``fast`` is also a platform tier name,
and the platform looks an alias up before the tiers, so an alias ``fast`` would hide the platform's
``fast`` tier. The mapping is therefore by position, speed to speed:

==================  ==================  ===============================================
seed mode           platform tier       accepted names
==================  ==================  ===============================================
(none: CI)          ``smoke``           smoke
minimal             ``fast``            fast, minimal
fast                ``standard``        standard (the seed's name ``fast`` means the
                                        platform's ``fast`` tier, i.e. seed minimal)
optimized           ``full``            full, optimized (``Config`` defaults)
==================  ==================  ===============================================

Tiers (measured on a 2-core CPU shared with other jobs, load average 10-35 for the fast and
standard tiers, one worker, no ImageNet weights in the torch hub cache so a random ResNet18 then;
``image_weights=auto`` now takes the packaged EfficientNet-Lite0 there (1280 features), which is no
slower on a CPU: 9 ms an image at 128 px against ResNet18's 19, one thread;
writing a synthetic set and extracting its features happen once, later runs read them back):

- ``smoke``: CI. 40 synthetic 64 px images (5 captions each; 28 train, 8 val, 4 test), features
  at 64 px from a randomly initialised ResNet18, embedding 16, LSTM 32, vocabulary at most 64
  words, 8 words a caption, greedy decoding, 2 epochs (41k parameters): 8 s to write the set and
  extract features, epochs of 1-7 s, 80 s for the whole command with Ray starting. Too few steps
  to learn (BLEU-4 about 0): it checks the plumbing.
- ``fast`` (seed ``minimal``): embedding 64, LSTM 128, vocabulary 3,000, 15 words, 5 epochs,
  batch 128, lr 3e-3, greedy decoding; 1,000 synthetic images at 128 px (238k parameters with
  the synthetic set's 31 words): 61 s to write and extract (16 s to read the features back),
  10-18 s an epoch, 4.5 minutes for the command; val BLEU-4 0.48, test 0.47 (the captions get
  the template and the size right; colour and shape need more epochs).
- ``standard`` (seed ``fast``): embedding 128, LSTM 256, vocabulary 5,000, 20 words, 10 epochs,
  batch 96, lr 2e-3, beam 3, patience 3; 1,000 synthetic images at 160 px (671k parameters): 46 s
  to extract the features, 6-9 s an epoch (beam search included), so about 2.5 minutes for the
  command; val BLEU-4 0.28 after 2 of its 10 epochs (timed with ``--set epochs=2``).
- ``full`` (seed ``optimized``, the ``Config`` defaults): embedding 256, LSTM 384, vocabulary
  8,000, 25 words, 30 epochs with early stopping (patience 5), batch 64, lr 2e-3, beam 3, 224 px.
  Meant for Flickr8k (``--data``) and a GPU; not timed here.

Image features are computed once per (data, rows, ``image_size``) and cached beside the data; the
rows name the image encoder by its network and weights' hash (``trainables/image_encoders.py``),
so ``image_weights=auto`` and the file it resolves to share them. Every trial of a sweep over the
keys below reuses them (a different vocabulary size or ``max_len`` changes the rows' token ids, so
it computes them again).
"""

from ray import tune

TIERS = {
    "smoke": {
        "synthetic_images": 40, "image_size": 64, "image_weights": "none",
        "embed_dim": 16, "hidden_dim": 32, "vocab_size": 64, "max_len": 8, "dropout": 0.1, "beam_width": 1,
        "epochs": 2, "batch_size": 16, "lr": 3e-3, "patience": 0, "val_fraction": 0.2, "test_fraction": 0.1,
    },
    "fast": {
        "synthetic_images": 1000, "image_size": 128,
        "embed_dim": 64, "hidden_dim": 128, "vocab_size": 3000, "max_len": 15, "beam_width": 1,
        "epochs": 5, "batch_size": 128, "lr": 3e-3, "patience": 0,
    },
    "standard": {
        "synthetic_images": 1000, "image_size": 160,
        "embed_dim": 128, "hidden_dim": 256, "vocab_size": 5000, "max_len": 20,
        "epochs": 10, "batch_size": 96, "lr": 2e-3, "patience": 3,
    },
    "full": {},
}

# The seed's mode names; its "fast" is not one (it would hide the platform's fast tier): see above.
ALIASES = {"minimal": "fast", "optimized": "full"}

SPACE = {
    "lr": tune.loguniform(3e-4, 5e-3),
    "weight_decay": tune.loguniform(1e-4, 1e-1),
    "embed_dim": tune.choice([64, 128, 256]),
    "hidden_dim": tune.choice([128, 256, 384, 512]),
    "dropout": tune.uniform(0.0, 0.5),
    "beam_width": tune.choice([1, 3, 5]),
}
