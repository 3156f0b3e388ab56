"""The caption vocabulary: built from the training captions, captions to token ids and back.

Used by ``python -m platform.run captioning`` (``build_datasets`` builds it, ``evaluate`` and
``python -m platform.predict`` decode with it); kept in the run's ``meta.json`` as a word list.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from trainables.captioning.data import normalize

PAD, START, END, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<start>", "<end>", "<unk>")


def build_vocabulary(train_captions: list[list[str]], vocab_size: int, min_count: int) -> list[str]:
    """The specials, then the most frequent training words (ties alphabetical), ``vocab_size`` in all."""
    counts = Counter(word for captions in train_captions for caption in captions for word in normalize(caption).split())
    ranked = sorted((word for word, count in counts.items() if count >= min_count), key=lambda w: (-counts[w], w))
    return [*SPECIALS, *ranked[: max(0, vocab_size - len(SPECIALS))]]


def encode_references(captions: list[str], index: dict[str, int], max_len: int, references: int) -> np.ndarray:
    """int64 [references, max_len + 2]: <start> words (cut at max_len) <end>, zero-padded; missing
    references (an image with fewer captions) are all-pad rows, which the loss skips."""
    encoded = np.full((references, max_len + 2), PAD, dtype=np.int64)
    for row, caption in enumerate(captions[:references]):
        ids = [index.get(word, UNK) for word in normalize(caption).split()[:max_len]]
        encoded[row, : len(ids) + 2] = [START, *ids, END]
    return encoded


def decode(ids, vocabulary: list[str]) -> str:
    """Words up to the first <end>, without <pad> and <start>: exactly the text that is scored."""
    words = []
    for token in ids:
        token = int(token)
        if token == END:
            break
        if token not in (PAD, START):
            words.append(vocabulary[token])
    return " ".join(words)
