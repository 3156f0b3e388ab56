"""Data identity by content: the first hash of a data set against the cached look-up, and the old listing.

    .venv/bin/python -m bench.content_hash [--small | --full]

``--small`` (default): 512 files of 512 KiB (256 MiB); ``--full``: 4096 files (2 GiB). The files are
random bytes of asl-signs' mean file size (48 GB / 94,477 sequences = 0.5 MB), written to a
temporary folder and evicted from the page cache (``posix_fadvise``, these files only), so the
first hash reads them from disk as a new data set is. Three arms, in one process:
- listing: what identified data before, each file's path and size (one ``stat`` a file);
- first hash: ``platform.data.content_hash.file_digests`` with an empty cache (a temporary
  ``RAYPLATFORM_CACHE``): every byte read and hashed, the digests remembered;
- cached: the same call again: a ``stat`` and a cache look-up a file, nothing read.
The summary extrapolates both to the full asl-signs set; the last line is one JSON object.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.common import parse_setting, print_summary

SETTINGS = {"small": 512, "full": 4096}
FILE_BYTES = 512 * 1024
ASL_SIGNS_FILES, ASL_SIGNS_MB = 94_477, 48_000


def write_files(folder: Path, count: int) -> list[str]:
    paths = []
    for index in range(count):
        path = folder / f"{index:05d}.parquet"
        with open(path, "wb") as handle:
            handle.write(os.urandom(FILE_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # read from disk, not memory
        paths.append(str(path))
    return paths


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    args = parse_setting(__doc__)
    count = SETTINGS["full" if args.full else "small"]
    with tempfile.TemporaryDirectory(prefix="content-hash-") as scratch:
        os.environ["RAYPLATFORM_CACHE"] = str(Path(scratch) / "cache")
        from platform.data import content_hash  # after the cache is pointed at the scratch folder

        data = Path(scratch) / "data"
        data.mkdir()
        paths = write_files(data, count)
        listing_s = timed(lambda: [os.stat(path).st_size for path in paths])
        first_s = timed(lambda: content_hash.file_digests(paths))
        cached_s = timed(lambda: content_hash.file_digests(paths))
    megabytes = count * FILE_BYTES / 1e6
    first_mb_s = megabytes / first_s
    per_file_us = cached_s / count * 1e6
    headline = {
        "files": count,
        "megabytes": round(megabytes, 1),
        "threads": content_hash.THREADS,
        "listing_s": round(listing_s, 4),
        "first_hash_s": round(first_s, 3),
        "first_hash_mb_s": round(first_mb_s, 1),
        "cached_s": round(cached_s, 4),
        "cached_us_a_file": round(per_file_us, 1),
        "asl_signs_first_hash_min": round(ASL_SIGNS_MB / first_mb_s / 60, 1),
        "asl_signs_cached_s": round(ASL_SIGNS_FILES * per_file_us / 1e6, 1),
    }
    print_summary(
        "content hash: first hash vs cached look-up",
        [
            ("files", f"{count} x {FILE_BYTES // 1024} KiB = {megabytes:.0f} MB, {content_hash.THREADS} hashing threads"),
            ("listing (path and size)", f"{listing_s:.3f} s"),
            ("first hash (read + sha256)", f"{first_s:.2f} s = {first_mb_s:.0f} MB/s"),
            ("cached look-up", f"{cached_s:.3f} s = {per_file_us:.0f} us a file"),
            (
                "asl-signs (48 GB, 94,477 files)",
                f"first hash about {headline['asl_signs_first_hash_min']} min, then {headline['asl_signs_cached_s']} s a run",
            ),
        ],
        notes=["the first hash's speed is this disk's and these cores' (sha256 runs about 1 GB/s a core); the look-up's is stat + SQLite"],
        headline=headline,
    )


if __name__ == "__main__":
    main()
