"""Where a run lives: a local or shared-filesystem folder, or an object-store URI through pyarrow.

    python -m platform.run asl --storage /shared/runs
    python -m platform.run asl --storage s3://bucket/runs      # also gs://, hdfs://...

With a folder, the run directory ``<storage>/<stem>/<name>/`` holds everything. With a URI, Ray
Train writes its checkpoints straight to ``<uri>/<stem>/<name>/`` from the workers, and the run's
own files (config, manifest, history, plots, best model, TensorBoard events) are written to a local
mirror first (``~/.cache/rayplatform/storage/...``) and uploaded beside the checkpoints when the
run starts, fails and finishes; ``--resume`` downloads them again on any machine.

Credentials come from each node's environment or instance role, never from the platform. The
non-secret settings in ``FORWARDED_ENV`` (an S3-compatible endpoint, the region) are passed from
the driver to the workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pyarrow.fs as pafs

from platform.cache import cache_root
from platform.errors import UserError

FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


def is_uri(storage: str) -> bool:
    return "://" in storage


def forwarded_env() -> dict[str, str]:
    return {key: os.environ[key] for key in FORWARDED_ENV if os.environ.get(key)}


@dataclasses.dataclass(frozen=True)
class RunLocation:
    """A run directory: ``local`` is always a folder here; ``remote`` its URI for object stores."""

    local: Path
    remote: str | None = None

    @property
    def name(self) -> str:
        return self.local.name

    @property
    def train_storage(self) -> str:
        """``RunConfig.storage_path``: where Ray Train puts ``<name>/`` with the checkpoints."""
        return self.remote.rsplit("/", 1)[0] if self.remote else str(self.local.parent)

    def exists(self, filename: str) -> bool:
        if self.remote is None:
            return (self.local / filename).exists()
        filesystem, path = _filesystem(self.remote)
        try:
            return filesystem.get_file_info(f"{path}/{filename}").type == pafs.FileType.File
        except OSError as err:  # no such bucket, no credentials, endpoint down
            raise UserError(f"--storage {self.remote}: {str(err).splitlines()[0]}") from None

    def pull(self) -> None:
        """The run's own files (not the checkpoints) from the object store into the mirror."""
        if self.remote is None:
            return
        filesystem, path = _filesystem(self.remote)
        self.local.mkdir(parents=True, exist_ok=True)
        for info in filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
            if info.type == pafs.FileType.File:
                pafs.copy_files(info.path, str(self.local / info.base_name), source_filesystem=filesystem)

    def push(self) -> None:
        """Upload the mirror beside the checkpoints (it never holds checkpoints itself)."""
        if self.remote is None or not self.local.is_dir():
            return
        filesystem, path = _filesystem(self.remote)
        pafs.copy_files(str(self.local), path, destination_filesystem=filesystem)


def locate(storage: str, stem: str, name: str) -> RunLocation:
    if not is_uri(storage):
        return RunLocation(Path(storage).expanduser().resolve() / stem / name)
    remote = f"{storage.rstrip('/')}/{stem}/{name}"
    _check_bucket(remote)
    return RunLocation(mirror_root(storage) / stem / name, remote)


def _check_bucket(remote: str) -> None:
    """Before any work: a run that cannot store its checkpoints must not start."""
    filesystem, path = _filesystem(remote)
    try:
        found = filesystem.get_file_info(path.split("/", 1)[0]).type != pafs.FileType.NotFound
    except OSError as err:  # no credentials, endpoint down
        raise UserError(f"--storage {remote}: {str(err).splitlines()[0]}") from None
    if not found:
        raise UserError(f"--storage {remote}: the bucket {path.split('/', 1)[0]!r} does not exist")


def mirror_root(storage_uri: str) -> Path:
    """This machine's copy of a storage URI's run files; named so that two URIs never share one."""
    readable = storage_uri.split("://", 1)[1].strip("/").replace("/", "_")
    return cache_root() / "storage" / f"{readable}-{hashlib.sha256(storage_uri.encode()).hexdigest()[:8]}"


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as err:
        raise UserError(f"--storage {uri}: {str(err).splitlines()[0]}") from None
