"""Reading a data folder's files safely: CSV text, paths named inside data files, images.

Used by the trainables' readers (``python -m platform.run asl|xr2text|gender_bias|captioning|emotion
--data DIR``): asl, xr2text, gender_bias and captioning read their CSVs and confine the paths those
name to DIR; emotion parses its CSVs here (after its own decoding); xr2text, gender_bias and
captioning (through ``trainables/pretrained.py``) decode images here. Like ``pretrained.py``, a
helper shared by trainables, not a trainable (no ``search_spaces/files.py``). Every bad file is a
``UserError`` naming it, which the commands print as one ``error:`` line.
"""

from __future__ import annotations

import io
import posixpath
import warnings

import pandas as pd
from PIL import Image, UnidentifiedImageError

from platform.data import locations
from platform.errors import UserError

# 8000 x 8000. Real inputs are far smaller (IU X-Ray PNGs are a few megapixels, Flickr photos
# less), and decoding more would take hundreds of MB a worker; Pillow's own limit is 89 MP.
MAX_IMAGE_PIXELS = 64_000_000


def utf8_text(raw: bytes, shown: object) -> str:
    """``raw`` decoded as UTF-8 (a BOM allowed); an empty or non-UTF-8 file is a UserError."""
    if not raw.strip():
        raise UserError(f"{shown}: empty file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise UserError(f"{shown}: not UTF-8 text (byte 0x{raw[err.start]:02x} on line {line}); save it as UTF-8") from None


def read_csv(text: str, shown: object, columns: tuple[str, ...] = (), rows_required: bool = True, **options) -> pd.DataFrame:
    """The CSV ``text`` as a DataFrame (``options`` go to ``pd.read_csv``); a file that does not
    parse, lacks one of ``columns`` or, when ``rows_required``, has a header but no rows is a UserError."""
    try:
        frame = pd.read_csv(io.StringIO(text), **options)
    except pd.errors.EmptyDataError:
        raise UserError(f"{shown}: empty file") from None
    except (ValueError, pd.errors.ParserError) as err:
        raise UserError(f"{shown}: not a readable CSV ({str(err).splitlines()[0]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{shown}: missing column(s) {', '.join(missing)}")
    if rows_required and frame.empty:
        raise UserError(f"{shown}: a header but no rows")
    return frame


def confined(value: str, shown: object) -> str:
    """``value``, a path named in the data file ``shown``, as a normalised relative POSIX path.

    Lexical, without touching the filesystem: the same rule holds for ``s3://`` folders, and a
    data folder may still link a subfolder to another disk. An absolute path, one whose ``..``
    climbs above the data folder, or one holding a NUL byte (no file's name does) is a UserError
    naming the file and the value.
    """
    if "\x00" in value:
        raise UserError(f"{shown}: path {value!r} holds a NUL byte")
    normal = posixpath.normpath(value)
    if posixpath.isabs(normal) or normal == ".." or normal.startswith("../"):
        raise UserError(f"{shown}: path {value!r} points outside the data folder")
    return normal


def decode_image(path: str, mode: str) -> Image.Image:
    """The image file at ``path`` decoded in ``mode`` ("RGB", "L"); a missing, unreadable or
    larger than ``MAX_IMAGE_PIXELS`` image is a UserError naming it."""
    bomb = f"more than the {MAX_IMAGE_PIXELS:,} pixels an image may have (a decompression bomb?)"
    try:
        with warnings.catch_warnings():
            # Pillow only warns below twice its own limit; here a bomb is an error, not a log line.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(locations.opened(path)) as image:  # a local path or an s3:// URI
                if image.width * image.height > MAX_IMAGE_PIXELS:  # the header's size: never decoded
                    raise UserError(f"{path}: {image.width}x{image.height} pixels, {bomb}")
                return image.convert(mode)
    except FileNotFoundError:
        raise UserError(f"{path}: image not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{path}: {bomb}") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable image ({str(err).splitlines()[0]})") from None
