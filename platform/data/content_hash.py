"""A data set's identity by content: each file's bytes hashed once, not its path and size.

Used by every trainable's reader (``python -m platform.run <stem> --data DIR|URI``): the meta's
``content_hash`` keys the preprocessed store (``platform/data/ingest.py``) and pins a resumed run to its
data. A local file's sha256 is remembered in ``<cache>/content-hashes.sqlite3`` under its path, size,
mtime, inode and ctime, so an unchanged 48 GB set is read once; writing a file changes its ctime,
which ``os.utime`` cannot set back, so a file rewritten at the same size with its old mtime restored
is still hashed again. An object-store file is named by its ETag (one metadata request, no read);
a store that gives none has its bytes hashed, each time. No Ray here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.fs as pafs

from platform.data import locations
from platform.data.cache import cache_root
from platform.errors import UserError

CACHE_FILE = "content-hashes.sqlite3"
CHUNK_BYTES = 1 << 20
# Reads and sha256 both release the GIL: a thread a core keeps them busy; an object store's
# metadata requests wait on the network, so more of them are in flight.
THREADS = min(8, os.cpu_count() or 1)
OBJECT_THREADS = 32


def content_hash(parts: Iterable[bytes], files: Mapping[str, str]) -> str:
    """``sha256:`` over ``parts`` (index files' bytes, split lists) and every file's name and content;
    ``files`` maps the name a file is hashed under (relative where the reader has one) to its location."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    contents = file_digests(list(files.values()))
    for name in sorted(files):
        digest.update(f"{name}\0{contents[files[name]]}\n".encode())
    return "sha256:" + digest.hexdigest()


def file_digests(paths: list[str]) -> dict[str, str]:
    """Location -> ``sha256:<hex>`` of its bytes (a local file, or an object without an ETag) or
    ``etag:<etag>`` (an object store's)."""
    local = [p for p in dict.fromkeys(paths) if not locations.is_uri(p)]
    found = _local_digests(local) if local else {}
    remote = [p for p in dict.fromkeys(paths) if locations.is_uri(p)]
    for prefix in dict.fromkeys(_bucket(p) for p in remote):
        fs, _ = locations.filesystem(prefix)
        group = [p for p in remote if _bucket(p) == prefix]
        with ThreadPoolExecutor(OBJECT_THREADS) as pool:
            found.update(zip(group, pool.map(_object_digest, [fs] * len(group), group)))
    return found


def _bucket(uri: str) -> str:
    scheme, rest = uri.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _object_digest(fs: pafs.FileSystem, uri: str) -> str:
    inner = uri.split("://", 1)[1]
    try:
        with fs.open_input_stream(inner) as stream:
            etag = (stream.metadata() or {}).get("ETag", b"").decode().strip('"')
            return f"etag:{etag}" if etag else _sha256(stream)
    except (OSError, pa.ArrowException) as err:
        raise UserError(f"{uri}: not found or unreadable ({str(err).splitlines()[0]})") from None


def _sha256(stream) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK_BYTES):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _stamp(path: str) -> str:
    """What changes whenever the file's bytes may have: size, mtime, inode and ctime."""
    info = os.stat(path)
    return f"{info.st_size}:{info.st_mtime_ns}:{info.st_ino}:{info.st_ctime_ns}"


def _hash_local(path: str) -> tuple[str, str | None]:
    """The file's digest, and its stamp when it did not change while it was read (else None)."""
    try:
        before = _stamp(path)
        with open(path, "rb") as handle:
            digest = _sha256(handle)
        return digest, before if _stamp(path) == before else None
    except OSError as err:
        raise UserError(f"{path}: not found or unreadable ({err.strerror or err})") from None


def _local_digests(paths: list[str]) -> dict[str, str]:
    cache = _open_cache()
    try:
        known = _known(cache, paths)
        missing = [p for p in paths if p not in known]
        with ThreadPoolExecutor(THREADS) as pool:
            hashed = dict(zip(missing, pool.map(_hash_local, missing)))
        _remember(cache, [(path, stamp, digest) for path, (digest, stamp) in hashed.items() if stamp])
    finally:
        if cache is not None:
            cache.close()
    return {**known, **{path: digest for path, (digest, _) in hashed.items()}}


def _known(cache: sqlite3.Connection | None, paths: list[str]) -> dict[str, str]:
    """The cached digests still valid: the file's stamp is the one it was hashed under."""
    known: dict[str, str] = {}
    if cache is None:
        return known
    try:
        for path in paths:
            with contextlib.suppress(OSError):  # a file that went: hashing it names it
                row = cache.execute("SELECT stamp, digest FROM digests WHERE path = ?", (path,)).fetchone()
                if row and row[0] == _stamp(path):
                    known[path] = row[1]
    except sqlite3.Error:  # an unreadable cache is only slower
        return {}
    return known


def _remember(cache: sqlite3.Connection | None, rows: list[tuple[str, str, str]]) -> None:
    if cache is None or not rows:
        return
    with contextlib.suppress(sqlite3.Error):  # not remembered: hashed again next time
        with cache:  # one transaction: all or nothing, whoever else writes at the same time
            cache.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?)", rows)


def _open_cache() -> sqlite3.Connection | None:
    """The digest cache (SQLite: a commit is atomic, and two processes take turns writing); None
    when it cannot be opened, so hashing still works, only every time. A file that is not a
    database (torn by a full disk, say) is started again."""
    path = cache_root() / CACHE_FILE
    for _attempt in range(2):
        connection = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, timeout=60)
            connection.execute("CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, stamp TEXT, digest TEXT)")
            return connection
        except (OSError, sqlite3.OperationalError):  # not writable, or busy for a minute
            if connection is not None:
                connection.close()
            return None
        except sqlite3.DatabaseError:  # not a database
            if connection is not None:
                connection.close()
            path.unlink(missing_ok=True)
    return None
