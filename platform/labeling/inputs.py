"""Reading the posts to label (the seed's ``posts.csv``: post_id, image_path, caption, ...).

Used by ``python -m platform.label /path/to/social`` (a folder holding posts.csv, or the csv itself).
Rows that cannot be sent (missing or unreadable image, empty caption) are found here, before any
request, and go straight to quarantine.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from platform.errors import UserError
from platform.labeling import prompt

REQUIRED = ("post_id", "image_path", "caption")
POSTS_FILE = "posts.csv"
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


@dataclass
class Posts:
    source: Path
    folder: Path
    table: pd.DataFrame  # post_id, image_path (absolute), caption, key, mime, problem


def locate(source: str) -> tuple[Path, Path]:
    """``(csv, folder)`` for a csv path or a folder holding posts.csv."""
    path = Path(source).expanduser().resolve()
    if path.is_dir():
        path = path / POSTS_FILE
    if not path.is_file():
        raise UserError(f"no posts table at {path} (give posts.csv or the folder holding it)")
    return path, path.parent


def cache_key(image_digest: str, caption: str, model: str) -> str:
    """sha256 of everything that decides the answer: image, caption, prompt version, model, parameters."""
    parts = [image_digest, caption, prompt.PROMPT_VERSION, model, json.dumps(prompt.GENERATION, sort_keys=True)]
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def read(source: str, model: str) -> Posts:
    path, folder = locate(source)
    try:
        table = pd.read_csv(path, dtype={"post_id": str, "image_path": str, "caption": str}, keep_default_na=False)
    except (ValueError, OSError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise UserError(f"{path} lacks column(s) {', '.join(missing)} (needs {', '.join(REQUIRED)})")
    rows = []
    for post_id, image_path, caption in zip(table["post_id"], table["image_path"], table["caption"]):
        image = (folder / image_path).resolve() if image_path else None
        caption = str(caption).strip()
        mime, key, problem = "", "", ""
        data = _read_image(image)
        if isinstance(data, str):
            problem = data
        else:
            mime = data[1]
            if not caption:
                problem = "empty_caption"
            key = cache_key(hashlib.sha256(data[0]).hexdigest(), caption, model)
        rows.append({"post_id": str(post_id), "image_path": str(image or ""), "caption": caption,
                     "key": key, "mime": mime, "problem": problem})
    columns = ["post_id", "image_path", "caption", "key", "mime", "problem"]
    return Posts(path, folder, pd.DataFrame(rows, columns=columns))


def _read_image(image: Path | None) -> tuple[bytes, str] | str:
    """The bytes and MIME type, or the quarantine reason."""
    if image is None or not image.is_file():
        return f"missing_image: {image}" if image else "missing_image: no image_path"
    try:
        data = image.read_bytes()
    except OSError as err:
        return f"unreadable_image: {err.strerror or err}"
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.verify()
            kind = picture.format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"unreadable_image: {str(err).splitlines()[0][:120] if str(err) else 'not an image'}"
    if kind not in MIME:
        return f"unreadable_image: {kind} is not a format vision APIs take"
    return data, MIME[kind]


def image_bytes(path: str) -> bytes:
    return Path(path).read_bytes()
