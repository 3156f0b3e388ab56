"""The word vocabulary of the text generators: four specials at ids 0-3 (padding, start, end,
unknown), then the training words seen often enough, most frequent first (ties alphabetical).

Used by ``python -m platform.run captioning`` and ``python -m platform.run xr2text`` (their
``build_datasets`` build it; ``evaluate`` and ``python -m platform.predict`` decode with it). Each
names its specials its own way (``<start>`` or ``<bos>``), as the word lists in its runs' meta.json
keep them; the ids are the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

PAD_ID, START_ID, END_ID, UNK_ID = range(4)


def build(texts: Iterable[list[str]], specials: tuple[str, ...], size: int, min_count: int) -> list[str]:
    """``specials``, then the words of ``texts`` (each a list of words) seen at least ``min_count``
    times, ``size`` entries in all."""
    counts = Counter(word for text in texts for word in text)
    ranked = sorted((word for word, count in counts.items() if count >= min_count), key=lambda w: (-counts[w], w))
    return [*specials, *ranked[: max(0, size - len(specials))]]


def decode(ids: Iterable[int], vocabulary: list[str]) -> str:
    """Words up to the first end id, without padding and start: exactly the text that is scored."""
    words = []
    for token in ids:
        token = int(token)
        if token == END_ID:
            break
        if token not in (PAD_ID, START_ID):
            words.append(vocabulary[token])
    return " ".join(words)
