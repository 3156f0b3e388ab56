"""Reading a Flickr8k folder: captions in either layout, the image folder, the splits. No Ray here.

Used by ``python -m platform.run captioning --data DIR`` (through ``build_datasets``); tests call it
directly. DIR holds one captions file, at its top or in ``Flickr8k_text/``:

- ``captions.txt``: a CSV with the header ``image,caption`` (the Kaggle layout), or
- ``Flickr8k.token.txt``: ``<image>#<n><TAB><caption>`` lines (the original release),

and the images in ``Images/`` (or ``Flicker8k_Dataset/``, the original release's spelling, or
``Flickr8k_Dataset/``). The standard split lists ``Flickr_8k.trainImages.txt``,
``Flickr_8k.devImages.txt`` (our ``val``) and ``Flickr_8k.testImages.txt``, beside the captions
file, are honoured when present; otherwise images are split by a seeded shuffle.

Bad input: a missing folder, no captions file, an empty or non-UTF-8 one, a line that does not
parse, an empty caption or an image name that climbs out of the image folder is a ``UserError``
naming the file (and line). A caption whose image file is absent is skipped and counted
(``meta["skipped_captions"]``, with a few names): the original release lists captions of an image
that it does not ship. An image that exists but does not decode is a ``UserError`` naming it, raised
in preprocessing (decoding every image here would read the set twice).
"""

from __future__ import annotations

import csv
import io
import posixpath
import re
from pathlib import Path

import numpy as np

from platform.data import locations
from platform.data.content_hash import content_hash
from platform.data.locations import Folder
from platform.errors import UserError
from trainables.files import confined, utf8_text

CAPTION_FILES = ("captions.txt", "Flickr8k.token.txt")
TEXT_FOLDERS = (".", "Flickr8k_text")
IMAGE_FOLDERS = ("Images", "Flicker8k_Dataset", "Flickr8k_Dataset")
SPLIT_LISTS = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}
SHOWN_SKIPPED = 5


def normalize(caption: str) -> str:
    """Lower case words and numbers joined by single spaces: the text that is tokenized and scored."""
    return " ".join(re.findall(r"[a-z0-9]+", caption.lower()))


def find_captions_file(root: Folder, files: set[str]) -> str:
    """The captions file's path in ``root`` (whose ``files`` are listed)."""
    for folder in TEXT_FOLDERS:
        for name in CAPTION_FILES:
            relative = posixpath.normpath(posixpath.join(folder, name))
            if relative in files:
                return relative
    raise UserError(f"{root}: no captions file ({' or '.join(CAPTION_FILES)}, at the top or in Flickr8k_text/)")


def find_image_folder(root: Folder) -> str:
    for name in IMAGE_FOLDERS:
        if root.is_dir(name):
            return name
    raise UserError(f"{root}: no image folder ({', '.join(n + '/' for n in IMAGE_FOLDERS)})")


def _csv_pairs(text: str, path: str) -> list[tuple[int, str, str]]:
    reader = csv.reader(io.StringIO(text))
    header = [cell.strip().lower() for cell in next(reader, [])]
    if header[:2] != ["image", "caption"]:
        raise UserError(f"{path}: the first line must be the header 'image,caption', not {','.join(header)!r}")
    pairs = []
    for line, cells in enumerate(reader, start=2):
        if not cells:
            continue
        if len(cells) != 2:
            raise UserError(f"{path} line {line}: expected 'image,caption' (quote a caption holding commas)")
        pairs.append((line, cells[0].strip(), cells[1]))
    return pairs


def _token_pairs(text: str, path: str) -> list[tuple[int, str, str]]:
    pairs = []
    for line, content in enumerate(text.splitlines(), start=1):
        if not content.strip():
            continue
        key, tab, caption = content.partition("\t")
        image, hash_sign, number = key.strip().rpartition("#")
        if not tab or not hash_sign or not number.isdigit():
            raise UserError(f"{path} line {line}: expected '<image>#<n><TAB><caption>'")
        pairs.append((line, image, caption))
    return pairs


def read_captions(path: str | Path) -> tuple[dict[str, list[str]], bytes]:
    """{image file name: [caption, ...]} in file order, and the file's bytes (for the content hash)."""
    path = str(path)  # a local path or a URI
    raw = locations.read_bytes(path)
    text = utf8_text(raw, path)
    pairs = _csv_pairs(text, path) if posixpath.basename(path) == "captions.txt" else _token_pairs(text, path)
    captions: dict[str, list[str]] = {}
    for line, image, caption in pairs:
        if not image or not normalize(caption):
            raise UserError(f"{path} line {line}: empty image name or caption")
        captions.setdefault(image, []).append(caption.strip())
    if not captions:
        raise UserError(f"{path}: no captions")
    return captions, raw


def _split_lists(root: Folder, files: set[str], beside: str) -> dict[str, list[str]] | None:
    """The standard split lists in the folder ``beside`` (the captions file's), when at least the
    train and dev lists are there."""
    listed = {split: posixpath.normpath(posixpath.join(beside, name)) for split, name in SPLIT_LISTS.items()}
    present = {split: relative for split, relative in listed.items() if relative in files}
    if "train" not in present or "val" not in present:
        return None
    return {split: _listed_names(root, relative) for split, relative in present.items()}


def _listed_names(root: Folder, relative: str) -> list[str]:
    raw = root.read_bytes(relative)
    if not raw.strip():  # an empty list is an empty split, not a bad file
        return []
    return [n.strip() for n in utf8_text(raw, root.path(relative)).splitlines() if n.strip()]


def seeded_split(images: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Images by split (a seeded shuffle; val and test get at least one image each when asked for)."""
    order = [images[i] for i in np.random.default_rng(seed).permutation(len(images))]
    val = max(1, round(len(order) * val_fraction)) if val_fraction > 0 else 0
    test = max(1, round(len(order) * test_fraction)) if test_fraction > 0 else 0
    if val + test >= len(order):
        raise UserError(f"{len(order)} images are too few to hold out val_fraction={val_fraction} and test_fraction={test_fraction}")
    splits = {"val": sorted(order[:val]), "test": sorted(order[val : val + test]), "train": sorted(order[val + test :])}
    return {name: names for name, names in splits.items() if names}


def _content_hash(captions_raw: bytes, images: dict[str, str], lists: dict | None) -> str:
    """sha256 of the captions file, the split lists and each image's name and content."""
    split_lists = [f"{split}:{','.join(names)}\n".encode() for split, names in sorted((lists or {}).items())]
    return content_hash([captions_raw, *split_lists], images)


def read_flickr(data_dir: str, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0):
    """Rows by split, ``{"image", "image_path", "captions"}`` (one an image, its raw captions), and meta."""
    root = Folder(data_dir)
    if not root.exists():
        raise UserError(f"{data_dir}: data folder not found")
    files = root.tree()  # one listing: every image is looked up in it, not file by file
    captions_file = find_captions_file(root, files)
    captions_path, image_folder = root.path(captions_file), find_image_folder(root)
    captions, raw = read_captions(captions_path)
    paths = {name: posixpath.normpath(f"{image_folder}/{confined(name, captions_path)}") for name in captions}
    present = {name: root.path(relative) for name, relative in paths.items() if relative in files}
    skipped = [name for name in captions if name not in present]
    if not present:
        raise UserError(f"{captions_path}: none of its {len(captions)} images is in {root.path(image_folder)}")
    lists = _split_lists(root, files, posixpath.dirname(captions_file))
    if lists:
        splits = {split: [n for n in names if n in present] for split, names in lists.items()}
    else:
        splits = seeded_split(sorted(present), val_fraction, test_fraction, seed)
    rows = {split: [{"image": n, "image_path": str(present[n]), "captions": captions[n]} for n in names] for split, names in splits.items()}
    meta = {
        "data_path": root.location,
        "captions_file": captions_path,
        "content_hash": _content_hash(raw, present, lists),
        "split_source": "standard split lists" if lists else f"seeded split (seed {seed})",
        "images": {split: len(split_rows) for split, split_rows in rows.items()},
        "captions": sum(len(captions[n]) for n in present),
        "skipped_captions": {"count": sum(len(captions[n]) for n in skipped), "images": len(skipped), "examples": skipped[:SHOWN_SKIPPED]},
    }
    return rows, meta
