"""The captioner's trivial baseline: one training caption given to every image.

Used by ``python -m platform.run captioning`` through the ``baseline`` hook in
``trainables/captioning/__init__.py`` (the platform side is ``platform/runs/baseline.py``): the caption
that scores best against the training references is fitted once a run and scored on val and test
with the same :func:`caption_metrics` as the model's captions, so ``val/bleu4`` means the same thing.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu

from platform.runs.baseline import Trivial
from trainables.captioning.metrics import caption_metrics
from trainables.captioning.vocab import SPECIALS, START, UNK, decode

# The candidates are one random caption of each of CANDIDATES random training images, scored
# against the references of REFERENCE_IMAGES other ones (disjoint, so no candidate meets its own
# image's references). Scoring every caption against every image is quadratic in the split
# (Flickr8k: 30k x 6k pycocoevalcap scorings); corpus BLEU of a constant caption is made by the
# split's commonest n-grams, which a hundred images already rank alike, and this bounds the cost
# to CANDIDATES x REFERENCE_IMAGES BLEU scorings (about 2 s here) whatever the split's size.
CANDIDATES = 32
REFERENCE_IMAGES = 128


def training_references(batches: Iterable[dict], vocabulary: list[str]) -> list[list[str]]:
    """Each training image's references as the model could write them (its vocabulary, cut at max_len)."""
    images = []
    for batch in batches:
        for references in batch["captions"].tolist():
            images.append([decode(ids, vocabulary) for ids in references if ids and ids[0] == START])
    return [captions for captions in images if captions]


def candidates_and_references(images: list[list[str]], seed: int) -> tuple[list[str], list[list[str]]]:
    """A seeded sample: candidate captions from some images, the references of others."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    chosen = order[: max(1, min(CANDIDATES, len(images) // 2))]
    others = order[len(chosen) :][:REFERENCE_IMAGES]
    referees = [images[i] for i in (others if len(others) else chosen)]
    return [_drawn(images[i], rng) for i in chosen], referees


def _drawn(captions: list[str], rng: np.random.Generator) -> str:
    """One of an image's captions, one without <unk> where there is one: the model writes <unk>
    only where its vocabulary has no word, and a baseline that does would lose for nothing."""
    known = [caption for caption in captions if SPECIALS[UNK] not in caption.split()] or captions
    return known[rng.integers(len(known))]


def ranking(caption: str, references: list[list[str]]) -> tuple[float, ...]:
    """BLEU-4 of ``caption`` for every image (pycocoevalcap's, as :func:`caption_metrics` has it,
    without its CIDEr and ROUGE-L costs), then BLEU-3, 2 and 1: on a small split most constant
    captions share no 4-gram with the references, and a tie on 0 says nothing about them."""
    gts = dict(enumerate(references))
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its length statistics
        bleu, _ = Bleu(4).compute_score(gts, {k: [caption] for k in gts}, verbose=0)
    return tuple(float(score) for score in reversed(bleu))


def scored(caption: str, references: Iterable[list[str]], prefix: str = "val/") -> dict[str, float]:
    return caption_metrics([{"references": refs, "prediction": caption} for refs in references], prefix)


def eval_references(batches: Iterable[dict], eval_images: list[dict]) -> Iterator[list[str]]:
    """The references of each image of a validation or test split, as ``evaluate`` scores them."""
    for batch in batches:
        for index in batch["eval_index"].tolist():
            yield eval_images[index]["references"]


def best_caption(read: Callable, meta: dict, seed: int) -> Trivial:
    """The training caption with the best BLEU-4 against the training references, for every image."""
    images = training_references(read("captions"), meta["vocabulary"])
    if not images:
        raise ValueError("the training split has no captions to choose a baseline caption from")
    candidates, references = candidates_and_references(images, seed)
    distinct = list(dict.fromkeys(candidates))  # in sample order, so a tie goes to the first drawn
    caption = max(distinct, key=lambda candidate: ranking(candidate, references))
    eval_images = meta.get("eval_images") or []
    return Trivial(
        f"caption {caption!r} for every image (the best of {len(distinct)} training captions)",
        lambda batches: scored(caption, list(eval_references(batches, eval_images))),
    )
