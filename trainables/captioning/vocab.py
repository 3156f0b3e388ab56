"""The caption vocabulary: built from the training captions, captions to token ids and back.

Used by ``python -m platform.run captioning`` (``build_datasets`` builds it, ``evaluate`` and
``python -m platform.predict`` decode with it); kept in the run's ``meta.json`` as a word list.
"""

from __future__ import annotations

import numpy as np

from trainables import vocab
from trainables.captioning.data import normalize
from trainables.vocab import decode  # noqa: F401 - captioning's decode is the shared one

PAD, START, END, UNK = vocab.PAD_ID, vocab.START_ID, vocab.END_ID, vocab.UNK_ID
SPECIALS = ("<pad>", "<start>", "<end>", "<unk>")


def build_vocabulary(train_captions: list[list[str]], vocab_size: int, min_count: int) -> list[str]:
    """The specials, then the most frequent training words (ties alphabetical), ``vocab_size`` in all."""
    texts = (normalize(caption).split() for captions in train_captions for caption in captions)
    return vocab.build(texts, SPECIALS, vocab_size, min_count)


def encode_references(captions: list[str], index: dict[str, int], max_len: int, references: int) -> np.ndarray:
    """int64 [references, max_len + 2]: <start> words (cut at max_len) <end>, zero-padded; missing
    references (an image with fewer captions) are all-pad rows, which the loss skips."""
    encoded = np.full((references, max_len + 2), PAD, dtype=np.int64)
    for row, caption in enumerate(captions[:references]):
        ids = [index.get(word, UNK) for word in normalize(caption).split()[:max_len]]
        encoded[row, : len(ids) + 2] = [START, *ids, END]
    return encoded
