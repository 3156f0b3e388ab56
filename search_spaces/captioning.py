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
- ``fast`` (seed ``minimal``): features of the pretrained encoder at 224 px (its training size),
  embedding 128, LSTM 256 (the image fed at every step), vocabulary the training words seen 3 times
  (at most 3,000), 16 words, 15 epochs of batch 32, lr 2e-3 (cosine), dropout 0.3, label smoothing
  0.1, beam 3 with length penalty 0.7, best epoch by CIDEr-D. Measured on the 240 real images of
  ``../shared/datasets/flickr8k_dev`` (seeded split: 192 train, 24 val, 24 test; a vocabulary of 474
  entries; 1.5M parameters), by a script that runs the tier's model, optimizer and schedule without
  Ray (48 s for the 15 epochs on a nearly idle 2-core machine, beam search on val each epoch):
  best epoch 15, val CIDEr-D 0.285, BLEU-4 0.118, 96% distinct captions using 27 words; test
  CIDEr-D 0.321, BLEU-4 0.087, 88% distinct, 24 words. The captions name the subject and often a
  colour or the grass ("a brown dog and a white dog in the grass") but stutter ("a man in a man in
  a red"): 192 images teach little grammar. The old recipe (image in the first state only, <unk>
  allowed) reached val CIDEr-D 0.140 and 42% distinct after 11 epochs. The best constant caption
  (of the 960 training captions, the one with the best BLEU-4 against the training references:
  "a girl in a sandy area") scores val CIDEr-D 0.026, BLEU-4 0.000; test CIDEr-D 0.039, BLEU-4
  0.000. ``tests/test_captioning.py`` trains this tier on the same split and checks that the test
  images get varied captions that beat the constant one on CIDEr-D or BLEU-4: 101 s at load 2-5
  (features of the 240 images, 15 epochs, the constant caption's search); at load 30-40 the
  features alone took 5 minutes. Through the platform, ``rayplatform run captioning --tier fast
  --data ../shared/datasets/flickr8k_dev`` (2026-12-03, another training beside it, 121 s in all):
  best val CIDEr-D 0.295 at epoch 12 against the platform's baseline caption's 0.073 (the best of
  32 training captions); test CIDEr-D 0.329 (baseline 0.056), BLEU-4 0.083, 83% distinct captions
  using 24 words. ``smoke`` on the same images: val CIDEr-D 0.004 (baseline 0.011), and the run ends
  with the collapse and baseline warnings, as it should after 2 epochs.
  Without ``--data``: 1,000 synthetic images (not re-measured with this recipe).
- ``standard`` (seed ``fast``): embedding 128, LSTM 256, vocabulary 5,000, 20 words, 10 epochs,
  batch 96, lr 2e-3, beam 3, patience 3; 1,000 synthetic images at 160 px (671k parameters): 46 s
  to extract the features, 6-9 s an epoch (beam search included), so about 2.5 minutes for the
  command; val BLEU-4 0.28 after 2 of its 10 epochs (timed with ``--set epochs=2``).
  Measured before the image was fed at every step; not run on the real images.
- ``full`` (seed ``optimized``, the ``Config`` defaults): embedding 256, LSTM 384, vocabulary
  8,000, 25 words, 30 epochs with early stopping (patience 5), batch 64, lr 2e-3, beam 3, 224 px.
  Meant for Flickr8k (``--data``) and a GPU; not timed here.

Image features are computed once per (data, rows, ``image_size``) and cached beside the data; the
rows name the image encoder by its network and weights' hash (``trainables/image_encoders.py``),
so ``image_weights=auto`` and the file it resolves to share them. Every trial of a sweep over the
keys below reuses them (a different vocabulary size or ``max_len`` changes the rows' token ids, so
it computes them again).
"""

from platform.tune.distributions import choice, loguniform, uniform

# A tier's keys stay grouped by line (data, model, schedule), so tiers read side by side.
# fmt: off
TIERS = {
    "smoke": {
        "synthetic_images": 40, "image_size": 64, "image_weights": "none",
        "embed_dim": 16, "hidden_dim": 32, "vocab_size": 64, "max_len": 8, "dropout": 0.1, "beam_width": 1,
        "epochs": 2, "batch_size": 16, "lr": 3e-3, "patience": 0, "val_fraction": 0.2, "test_fraction": 0.1,
    },
    "fast": {
        "synthetic_images": 1000, "image_size": 224,
        "embed_dim": 128, "hidden_dim": 256, "vocab_size": 3000, "min_word_count": 3, "max_len": 16,
        "beam_width": 3, "epochs": 15, "batch_size": 32, "lr": 2e-3, "patience": 0,
    },
    "standard": {
        "synthetic_images": 1000, "image_size": 160,
        "embed_dim": 128, "hidden_dim": 256, "vocab_size": 5000, "max_len": 20,
        "epochs": 10, "batch_size": 96, "lr": 2e-3, "patience": 3,
    },
    "full": {},
}
# fmt: on

# The seed's mode names; its "fast" is not one (it would hide the platform's fast tier): see above.
ALIASES = {"minimal": "fast", "optimized": "full"}

SPACE = {
    "lr": loguniform(3e-4, 5e-3),
    "weight_decay": loguniform(1e-4, 1e-1),
    "embed_dim": choice([64, 128, 256]),
    "hidden_dim": choice([128, 256, 384, 512]),
    "dropout": uniform(0.0, 0.5),
    "beam_width": choice([1, 3, 5]),
    "length_penalty": uniform(0.0, 1.5),
    "label_smoothing": uniform(0.0, 0.2),
}
