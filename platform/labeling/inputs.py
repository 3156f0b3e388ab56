"""Reading the posts to label (the seed's ``posts.csv``: post_id, image_path, caption, ...).

Used by ``python -m platform.label /path/to/social`` (a folder holding posts.csv, or the csv itself).
Rows that cannot be sent (missing or unreadable image, a decompression bomb, empty caption) are
found here, before any request, and go straight to quarantine. An ``image_path`` outside the source
folder is refused as a whole (a posts.csv from elsewhere must not make us send ``~/private.jpg`` to
a third party) unless ``--allow-outside-images`` says the user means it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from platform import progress
from platform.errors import UserError
from platform.labeling import prompt
# The most pixels the gender_bias trainable decodes: a label for an image it refuses is money wasted.
from trainables.files import MAX_IMAGE_PIXELS

REQUIRED = ("post_id", "image_path", "caption")
POSTS_FILE = "posts.csv"
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


@dataclass
class Posts:
    source: Path
    folder: Path
    table: pd.DataFrame  # post_id, image_path (absolute), caption, key, mime, width, height, problem


def locate(source: str) -> tuple[Path, Path]:
    """``(csv, folder)`` for a csv path or a folder holding posts.csv."""
    path = Path(source).expanduser().resolve()
    if path.is_dir():
        path = path / POSTS_FILE
    if not path.is_file():
        raise UserError(f"no posts table at {path} (give posts.csv or the folder holding it)")
    return path, path.parent


def provider(base_url: str) -> str:
    """``--base-url`` as the cache key names the API: scheme, host, port and path, spelled one way
    (case, default port and trailing slash dropped) and without any user:password part."""
    parts = urllib.parse.urlsplit(base_url.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or port == -1:
        raise UserError(f"--base-url {base_url!r} is not an http(s) URL like https://openrouter.ai/api/v1")
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host  # IPv6
    netloc = host if port in (None, {"http": 80, "https": 443}[scheme]) else f"{host}:{port}"
    return urllib.parse.urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


def cache_key(image_digest: str, caption: str, model: str, api: str) -> str:
    """sha256 of everything that decides the answer: image, caption, prompt version, model, parameters
    and the API (``provider``): the test server's answers are not another provider's."""
    parts = [image_digest, caption, prompt.PROMPT_VERSION, model, json.dumps(prompt.GENERATION, sort_keys=True), api]
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def inside(folder: Path, value: str) -> bool:
    """Whether image_path ``value`` names a file in ``folder`` (resolved): lexically, so a subfolder
    the user linked to another disk stays inside (as for the trainables' data), or once resolved."""
    if Path(os.path.normpath(folder / value)).is_relative_to(folder):
        return True
    try:
        return (folder / value).resolve().is_relative_to(folder)
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL byte: nothing to send from inside
        return False


def refuse_outside(path: Path, folder: Path, table: pd.DataFrame) -> None:
    """One error naming the first image_path outside ``folder``, before any image is read or sent."""
    outside = [(post_id, value) for post_id, value in zip(table["post_id"], table["image_path"])
               if value and not inside(folder, value)]
    if outside:
        post_id, value = outside[0]
        more = f" (and {len(outside) - 1} more rows)" if len(outside) > 1 else ""
        raise UserError(f"{path}: post {post_id}: image_path {value!r} is outside {folder}{more}; "
                        "pass --allow-outside-images to send images from elsewhere to the API")


def read(source: str, model: str, api: str, allow_outside: bool = False, bar: bool = False) -> Posts:
    """The posts with their cache keys for ``model`` at ``api`` (``provider(--base-url)``); ``bar``:
    a progress bar of the scan (every image is read and its header checked)."""
    path, folder = locate(source)
    try:
        table = pd.read_csv(path, dtype={"post_id": str, "image_path": str, "caption": str}, keep_default_na=False)
    except (ValueError, OSError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise UserError(f"{path} lacks column(s) {', '.join(missing)} (needs {', '.join(REQUIRED)})")
    if not allow_outside:
        refuse_outside(path, folder, table)
    rows = []
    posts = zip(table["post_id"], table["image_path"], table["caption"])
    for post_id, image_path, caption in progress.counted(posts, len(table), "[label] scanning images", bar):
        image = (folder / image_path).resolve() if image_path else None
        caption = str(caption).strip()
        mime, key, problem, size = "", "", "", (0, 0)
        data = _read_image(image)
        if isinstance(data, str):
            problem = data
        else:
            mime, size = data[1], data[2]
            if not caption:
                problem = "empty_caption"
            key = cache_key(hashlib.sha256(data[0]).hexdigest(), caption, model, api)
        rows.append({"post_id": str(post_id), "image_path": str(image or ""), "caption": caption,
                     "key": key, "mime": mime, "width": size[0], "height": size[1], "problem": problem})
    columns = ["post_id", "image_path", "caption", "key", "mime", "width", "height", "problem"]
    return Posts(path, folder, pd.DataFrame(rows, columns=columns))


def _read_image(image: Path | None) -> tuple[bytes, str, tuple[int, int]] | str:
    """The bytes, MIME type and size, or the quarantine reason."""
    if image is None or not image.is_file():
        return f"missing_image: {image}" if image else "missing_image: no image_path"
    try:
        data = image.read_bytes()
    except OSError as err:
        return f"unreadable_image: {err.strerror or err}"
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow only warns below twice its own limit; here a bomb is a quarantine, not a log line.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as picture:
                if picture.width * picture.height > MAX_IMAGE_PIXELS:  # the header's size: never decoded
                    return (f"decompression_bomb: {picture.width}x{picture.height} pixels, more than the "
                            f"{MAX_IMAGE_PIXELS:,} an image may have")
                picture.verify()
                kind, size = picture.format, picture.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return f"decompression_bomb: {str(err).splitlines()[0][:160]}"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"unreadable_image: {str(err).splitlines()[0][:120] if str(err) else 'not an image'}"
    if kind not in MIME:
        return f"unreadable_image: {kind} is not a format vision APIs take"
    return data, MIME[kind], size


def image_bytes(path: str) -> bytes:
    return Path(path).read_bytes()
