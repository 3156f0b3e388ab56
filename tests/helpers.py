"""What the tests share besides fixtures: paths, the test environment, running a command as a user
does, and small file makers. Fixtures (one Ray for the session, the synthetic cache) are in
conftest.py.

    make test    # that is: .venv/bin/python -m pytest -q
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
TEST_ENV = {
    # Ray Train notices a dead worker within 0.2 s instead of its default seconds.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_DATA_LOG_LEVEL": "WARNING",
    # Dummy credentials for the loopback S3 server (tests/test_storage.py); a developer's real
    # ones never reach a test.
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# The bucket the loopback S3 server (conftest.py's s3_endpoint) starts with.
S3_BUCKET = "runs-bucket"


def shared_dataset(name: str) -> Path:
    """A real-format sample from ../shared/datasets, or a skip saying why there is none."""
    folder = SHARED_DATASETS / name
    if not folder.is_dir():
        pytest.skip(f"real-format sample {folder} is absent (it sits beside the repo in CI only)")
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_command(module: str, *args: str, address: str | None = None, timeout: float = 600, **kwargs):
    """``python -m platform.<module> args...`` from the repo root, as a user types it."""
    env = {**os.environ, **TEST_ENV}
    if address:
        env["RAY_ADDRESS"] = address
    return subprocess.run(
        [sys.executable, "-m", f"platform.{module}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A grayscale PNG that says it is width x height but holds no pixels: a decompression bomb's
    header. Pillow reads its size; decoding it fails, so a reader that decodes before checking the
    size reports the wrong error."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


class Storage:
    """Where a test's runs are stored, named as a user names it (``--storage``): a folder, or an
    ``s3://`` URI on the loopback S3 server. Tests read and write a run's files through it, so one
    test body with one set of assertions checks both."""

    def __init__(self, where: str):
        self.where = where

    def __str__(self) -> str:
        return self.where

    @property
    def is_uri(self) -> bool:
        return "://" in self.where

    def run(self, stem: str, name: str) -> str:
        """The run as the commands take it: its folder or its URI."""
        return f"{self.where}/{stem}/{name}"

    def files(self, stem: str, name: str) -> Path:
        """A folder with the run's own files as they are now (for a URI, copied afresh)."""
        from platform.runs import storage

        return storage.fetched(self.run(stem, name))

    def contents(self, stem: str, name: str) -> dict[str, bytes]:
        """Every file of the run, checkpoints included, by its path in the run: what "nothing was
        written" compares."""
        import pyarrow.fs as pafs

        from platform.data.store import filesystem

        fs, path = filesystem(self.run(stem, name))
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        return {
            info.path.removeprefix(path).lstrip("/"): fs.open_input_stream(info.path).read()
            for info in found
            if info.type == pafs.FileType.File
        }

    def write(self, stem: str, name: str, filename: str, data: bytes) -> None:
        from platform.data.store import filesystem

        fs, path = filesystem(f"{self.run(stem, name)}/{filename}")
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as stream:
            stream.write(data)

    def read(self, relative: str) -> bytes | None:
        """A file under the storage (``asl/tiers/tuned.json``) as it is now; None when absent."""
        from platform.data.store import filesystem

        fs, path = filesystem(f"{self.where}/{relative}")
        try:
            with fs.open_input_stream(path) as stream:
                return stream.read()
        except (FileNotFoundError, OSError):
            return None

    def modified(self, relative: str) -> int:
        """When a file under the storage was last written (ns)."""
        from platform.data.store import filesystem

        fs, path = filesystem(f"{self.where}/{relative}")
        return fs.get_file_info(path).mtime_ns

    def checkpoints(self, stem: str, name: str) -> list[str]:
        from platform.train import checkpoints

        return checkpoints.folders(self.run(stem, name))


def upload(folder: str, prefix: str) -> str:
    """A local folder copied to ``s3://<bucket>/<prefix>`` on the loopback S3 server; its URI."""
    import pyarrow.fs as pafs

    remote, path = pafs.FileSystem.from_uri(f"s3://{S3_BUCKET}/{prefix}")
    pafs.copy_files(folder, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=remote)
    return f"s3://{S3_BUCKET}/{prefix}"
