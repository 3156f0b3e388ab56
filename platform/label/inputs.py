"""Reading the rows to label: the task's id, image and text columns of a csv (for gender_bias, the
seed's ``posts.csv``: post_id, image_path, caption, ...).

Used by ``python -m platform.label /path/to/social`` (a folder holding the task's ``INPUT_FILE``, or
the csv itself). Rows are kept under the labeler's own names (``id``, ``image_path``, ``text``);
platform/label/report.py writes them back under the task's.
Rows that cannot be sent (missing or unreadable image, a decompression bomb, empty text) are
found here, before any request, and go straight to quarantine. An ``image_path`` outside the source
folder is refused as a whole (a posts.csv from elsewhere must not make us send ``~/private.jpg`` to
a third party) unless ``--allow-outside-images`` says the user means it.
The scan reads one image at a time and keeps only its digest, MIME type and size: the driver never
holds the images. They are read again where they are sent (the Labeler actors, the batch input
file) and sent only if they still hash to the digest scanned (``planned_image``): what was checked
here is what is sent, and an answer is never cached under the key of other bytes than it was
asked about.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from platform.errors import UserError, redacted
from platform.label.task import Task
from platform.tracking import progress

# The most pixels the gender_bias trainable decodes: a label for an image it refuses is money wasted.
from trainables.files import MAX_IMAGE_PIXELS

MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


@dataclass
class Posts:
    source: Path
    folder: Path
    table: pd.DataFrame  # id, image_path (absolute), text, digest (the image's sha256), key, mime, width, height, problem


def locate(source: str, input_file: str) -> tuple[Path, Path]:
    """``(csv, folder)`` for a csv path or a folder holding ``input_file``."""
    path = Path(source).expanduser().resolve()
    if path.is_dir():
        path = path / input_file
    if not path.is_file():
        raise UserError(f"no table to label at {path} (give {input_file} or the folder holding it)")
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
        raise UserError(f"--base-url {shown(base_url)!r} is not an http(s) URL like https://openrouter.ai/api/v1")
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host  # IPv6
    netloc = host if port in (None, {"http": 80, "https": 443}[scheme]) else f"{host}:{port}"
    return urllib.parse.urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


def shown(url: str) -> str:
    """``url`` as it may be printed: a user:password@ part and a query hidden."""
    return re.sub(r"\?.*", "?***", redacted(url.strip()))


def cache_key(image_digest: str, text: str, task: Task, model: str, api: str) -> str:
    """sha256 of everything that decides the answer: image, text, the task's version and generation
    parameters, model and the API (``provider``): the test server's answers are not another provider's."""
    parts = [image_digest, text, task.version, model, json.dumps(task.generation, sort_keys=True), api]
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


def refuse_outside(path: Path, folder: Path, ids: pd.Series, images: pd.Series) -> None:
    """One error naming the first image outside ``folder``, before any image is read or sent."""
    outside = [(row_id, value) for row_id, value in zip(ids, images) if value and not inside(folder, value)]
    if outside:
        row_id, value = outside[0]
        more = f" (and {len(outside) - 1} more rows)" if len(outside) > 1 else ""
        raise UserError(
            f"{path}: {ids.name} {row_id}: {images.name} {value!r} is outside {folder}{more}; "
            "pass --allow-outside-images to send images from elsewhere to the API"
        )


def read(source: str, task: Task, model: str, api: str, allow_outside: bool = False, bar: bool = False) -> Posts:
    """The rows with their cache keys for ``task`` and ``model`` at ``api`` (``provider(--base-url)``);
    ``bar``: a progress bar of the scan (every image is read and its header checked)."""
    path, folder = locate(source, task.input_file)
    names = [task.columns[role] for role in ("id", "image", "text")]
    try:
        table = pd.read_csv(path, dtype=dict.fromkeys(names, str), keep_default_na=False)
    except (ValueError, OSError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    missing = [c for c in names if c not in table.columns]
    if missing:
        raise UserError(f"{path} lacks column(s) {', '.join(missing)} (needs {', '.join(names)})")
    if not allow_outside:
        refuse_outside(path, folder, table[names[0]], table[names[1]])
    rows = []
    posts = zip(*(table[name] for name in names))
    for row_id, image_path, text in progress.counted(posts, len(table), "[label] scanning images", bar):
        image = _image_file(folder, image_path)
        text = str(text).strip()
        mime, digest, key, problem, size = "", "", "", "", (0, 0)
        data = image if isinstance(image, str) else _read_image(image)
        if isinstance(data, str):
            problem = data
        else:
            mime, size, digest = data[1], data[2], hashlib.sha256(data[0]).hexdigest()
            if not text:
                problem = f"empty_{names[2]}"
            key = cache_key(digest, text, task, model, api)
        rows.append(
            {
                "id": str(row_id),
                "image_path": str(image) if isinstance(image, Path) else "",
                "text": text,
                "digest": digest,
                "key": key,
                "mime": mime,
                "width": size[0],
                "height": size[1],
                "problem": problem,
            }
        )
    columns = ["id", "image_path", "text", "digest", "key", "mime", "width", "height", "problem"]
    return Posts(path, folder, pd.DataFrame(rows, columns=columns))


def _image_file(folder: Path, image_path: str) -> Path | str | None:
    """The image a row names, resolved; the quarantine reason for a name no file can have."""
    if not image_path:
        return None
    try:
        return (folder / image_path).resolve()
    except (OSError, RuntimeError, ValueError) as err:  # a NUL byte, a link loop
        return f"missing_image: {image_path!r} is not a usable path ({err})"


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
                    return (
                        f"decompression_bomb: {picture.width}x{picture.height} pixels, more than the {MAX_IMAGE_PIXELS:,} an image may have"
                    )
                picture.verify()
                kind, size = picture.format, picture.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return f"decompression_bomb: {str(err).splitlines()[0][:160]}"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"unreadable_image: {str(err).splitlines()[0][:120] if str(err) else 'not an image'}"
    if kind not in MIME:
        return f"unreadable_image: {kind} is not a format vision APIs take"
    return data, MIME[kind], size


def planned_image(path: str, digest: str) -> bytes | str:
    """The image the scan checked, read where it is sent; else the quarantine reason (not cached: a
    re-run scans the new file and asks about it under its own key)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return f"unreadable_image: {err.strerror or err}"
    if hashlib.sha256(data).hexdigest() != digest:
        return f"changed_image: {path} changed after the scan (run again to label what it holds now)"
    return data
