"""Data folders wherever they are: a local folder or an object-store URI (``s3://bucket/prefix``).

Used by ``python -m platform.run <stem> --data DIR|URI`` and ``python -m platform.tune``: the
commands check the folder exists before Ray starts (:func:`check_data_folder`), and every
trainable's reader lists and reads its files through :class:`Folder`, and decodes images and clips
through :func:`opened`, so one reader serves a folder and a bucket. No Ray here.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from platform.errors import UserError


def is_uri(location: str) -> bool:
    return "://" in location


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it; a URI it cannot open is a UserError."""
    try:
        if not is_uri(location):
            return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())
        fs, path = pafs.FileSystem.from_uri(location)
    except (OSError, ValueError, RuntimeError, pa.ArrowException) as err:  # RuntimeError: ~name of no user
        raise UserError(f"{location}: {_first_line(err)}") from None
    if not path.strip("/") and not isinstance(fs, pafs.LocalFileSystem):
        raise UserError(f"{location}: names no bucket")
    return fs, path.rstrip("/")


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def check_data_folder(location: str) -> None:
    """``--data`` names a folder (a local one, or a bucket and prefix holding objects): else one
    ``error:`` line, before Ray starts."""
    if not Folder(location).exists():
        raise UserError(f"data folder not found: {location}")


def read_bytes(location: str) -> bytes:
    """A file's bytes; FileNotFoundError (or another OSError) as the filesystem raises it."""
    if not is_uri(location):
        return Path(location).read_bytes()
    fs, path = filesystem(location)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except pa.ArrowException as err:
        raise OSError(_first_line(err)) from None


def opened(location: str) -> str | io.BytesIO:
    """What a decoder opens (Pillow, PyAV): a local path as it is (read lazily), an object-store
    file read into memory (an image or a clip: megabytes)."""
    return io.BytesIO(read_bytes(location)) if is_uri(location) else location


class Folder:
    """A data folder and the files in it, named by paths relative to it (POSIX, ``confined``)."""

    def __init__(self, location: str):
        self.fs, self.root = filesystem(location)
        # What rows and messages carry: the absolute local path, or the URI.
        self.location = location.rstrip("/") if is_uri(location) else self.root
        self.given = location

    def __str__(self) -> str:
        return self.location

    def shown(self, relative: str) -> str:
        """A file as error messages name it: inside the folder as the user gave it."""
        return self.path(relative) if is_uri(self.given) else str(Path(self.given) / relative)

    def path(self, relative: str = "") -> str:
        """The location of ``relative`` inside the folder: a local path or a URI."""
        return f"{self.location}/{relative}" if relative not in ("", ".") else self.location

    def _inner(self, relative: str) -> str:
        return f"{self.root}/{relative}" if relative not in ("", ".") else self.root

    def types(self, relatives: list[str]) -> list[pafs.FileType]:
        """Each path's type (a ``stat`` or a request a path: for a few paths, else :meth:`tree`)."""
        try:
            return [info.type for info in self.fs.get_file_info([self._inner(r) for r in relatives])]
        except (OSError, pa.ArrowException) as err:  # no such bucket, no credentials, endpoint down
            raise UserError(f"{self.location}: {_first_line(err)}") from None

    def exists(self) -> bool:
        return self.types([""])[0] == pafs.FileType.Directory

    def is_dir(self, relative: str) -> bool:
        return self.types([relative])[0] == pafs.FileType.Directory

    def is_file(self, relative: str) -> bool:
        return self.types([relative])[0] == pafs.FileType.File

    def tree(self, relative: str = "") -> set[str]:
        """Every file under a subfolder, as paths relative to the folder: one recursive listing
        (an object store lists a thousand keys a request, where a request a file would take minutes)."""
        infos = self._listed(pafs.FileSelector(self._inner(relative), recursive=True, allow_not_found=True), relative)
        return {info.path[len(self.root) + 1 :] for info in infos if info.type == pafs.FileType.File}

    def read_bytes(self, relative: str) -> bytes:
        """A file's bytes; FileNotFoundError (or another OSError) when it cannot be read."""
        if isinstance(self.fs, pafs.LocalFileSystem):
            return Path(self._inner(relative)).read_bytes()
        return read_bytes(self.path(relative))

    def listing(self, relative: str = "") -> dict[str, int]:
        """File name -> size of the files directly in a subfolder (none when it is absent)."""
        infos = self._listed(pafs.FileSelector(self._inner(relative), allow_not_found=True), relative)
        return {info.base_name: info.size for info in infos if info.type == pafs.FileType.File}

    def _listed(self, selector: pafs.FileSelector, relative: str) -> list[pafs.FileInfo]:
        try:
            return self.fs.get_file_info(selector)
        except (OSError, pa.ArrowException) as err:
            raise UserError(f"{self.path(relative)}: {_first_line(err)}") from None
