"""Where a run lives: a local or shared-filesystem folder, or an object-store URI through pyarrow.

    python -m platform.run asl --storage /shared/runs
    python -m platform.run asl --storage s3://bucket/runs      # also gs://, hdfs://...

With a folder, the run directory ``<storage>/<stem>/<name>/`` holds everything. With a URI, Ray
Train writes its checkpoints straight to ``<uri>/<stem>/<name>/`` from the workers, and the run's
own files (config, manifest, history, plots, best model, TensorBoard events) are written to a local
mirror first (``~/.cache/rayplatform/storage/...``) and uploaded beside the checkpoints when the
run starts, fails and finishes; ``--resume`` downloads them again on any machine.

A new run claims its folder before anything is written, atomically: an exclusive create of
``.claimed`` in a folder, a conditional put (``If-None-Match: *``) on S3. Of two runs that chose
one name, the second is refused, whatever the timing; on other object stores (``gs://``...) the
claim is a check followed by a write. A new run on a URI starts from an empty mirror, so files of
an earlier run of that name left on this machine are never uploaded as its own.

Credentials come from each node's environment or instance role, never from the platform. The
non-secret settings in ``FORWARDED_ENV`` (an S3-compatible endpoint, the region) are passed from
the driver to the workers.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import pyarrow.fs as pafs

from platform.data.cache import cache_root
from platform.errors import UserError, redacted
from platform.runs import run_files
from platform.train import checkpoints

TIERS_DIR = "tiers"  # <storage>/<stem>/tiers/: the tiers sweeps saved
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
    MARKER: ClassVar[str] = run_files.CONFIG_FILE
    """The file a started run has written: its name is taken for good."""

    def owns(self, name: str) -> bool:
        """One of the run's own files, which the mirror holds, ``pull`` downloads and ``push``
        uploads: not Ray Train's checkpoints and snapshot (a stale copy pushed back would undo the
        controller's record), nor the claim."""
        return not name.startswith(("epoch_", ".")) and name != checkpoints.SNAPSHOT_FILE

    @property
    def name(self) -> str:
        return self.local.name

    @property
    def train_storage(self) -> str:
        """``RunConfig.storage_path``: where Ray Train puts ``<name>/`` with the checkpoints."""
        return self.remote.rsplit("/", 1)[0] if self.remote else str(self.local.parent)

    @property
    def run_uri(self) -> str:
        """Where Ray Train writes this run's checkpoints and its snapshot."""
        return f"{self.train_storage.rstrip('/')}/{self.name}"

    def exists(self, filename: str) -> bool:
        if self.remote is None:
            return (self.local / filename).exists()
        filesystem, path = _filesystem(self.remote)
        try:
            return filesystem.get_file_info(f"{path}/{filename}").type == pafs.FileType.File
        except OSError as err:  # no such bucket, no credentials, endpoint down
            raise UserError(f"--storage {self.remote}: {str(err).splitlines()[0]}") from None

    @property
    def key(self) -> str:
        """The run, as this machine's lock on it names it (``run_files.hold``)."""
        return self.remote or str(self.local)

    def claim(self) -> bool:
        """This run's folder, for a new run: False when another run has the name (see the module).
        Call it holding this machine's lock on the run (``run_files.claim`` says why)."""
        if self.remote is None:
            try:
                return run_files.claim(self.local)
            except OSError as err:
                raise UserError(f"--storage {self.local.parent.parent}: cannot write there ({err.strerror or err})") from None
        if self.exists(self.MARKER):
            return False
        claim_uri = f"{self.remote}/{run_files.CLAIM_FILE}"
        if not _put_if_absent(claim_uri, run_files.claim_record()):
            if not run_files.is_left_behind(self.claimed_by()):
                return False
            _put(claim_uri, run_files.claim_record())
        shutil.rmtree(self.local, ignore_errors=True)  # an earlier run's mirror of this name
        self.local.mkdir(parents=True)
        return True

    def claimed_by(self) -> dict:
        """Who claimed the run (pid, host, when), read from where it lives."""
        if self.remote is None:
            return run_files.claimed_by(self.local)
        filesystem, path = _filesystem(self.remote)
        try:
            with filesystem.open_input_stream(f"{path}/{run_files.CLAIM_FILE}") as stream:
                record = json.loads(stream.read())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def release(self) -> None:
        """Give back the claim of a run that never started (nothing but the claim written), so the
        same command can be typed again once its error is fixed."""
        if self.exists(self.MARKER):
            return
        if self.remote is not None:
            filesystem, path = _filesystem(self.remote)
            filesystem.delete_file(f"{path}/{run_files.CLAIM_FILE}")
        (self.local / run_files.CLAIM_FILE).unlink(missing_ok=True)
        for folder in (self.local, self.local.parent):  # the run's folder, and its stem's if it was the only run
            try:
                folder.rmdir()
            except OSError:  # not empty, or gone
                return

    def pull(self) -> None:
        """The run's own files (``tensorboard/`` too, not the checkpoints) from the object store into an empty mirror:
        what the bucket holds is the run, not what an earlier run left on this machine."""
        if self.remote is None:
            return
        filesystem, path = _filesystem(self.remote)
        shutil.rmtree(self.local, ignore_errors=True)
        self.local.mkdir(parents=True)
        for info in filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
            if self.owns(info.base_name) and info.type in (pafs.FileType.File, pafs.FileType.Directory):
                if info.type == pafs.FileType.Directory:  # tensorboard/: pyarrow makes no local folders
                    (self.local / info.base_name).mkdir()
                pafs.copy_files(info.path, str(self.local / info.base_name), source_filesystem=filesystem)

    def push(self) -> None:
        """Upload the mirror's own files beside the checkpoints."""
        if self.remote is None or not self.local.is_dir():
            return
        filesystem, path = _filesystem(self.remote)
        for entry in sorted(self.local.iterdir()):
            if self.owns(entry.name):
                pafs.copy_files(str(entry), f"{path}/{entry.name}", destination_filesystem=filesystem)

    def read_json(self, filename: str) -> dict | None:
        """One of the run's files as it is where the run lives (None when absent or torn): read
        without pulling the whole run, as a sweep's driver reads its trials'."""
        if self.remote is None:
            try:
                return run_files.read_json(self.local / filename)
            except (OSError, ValueError):
                return None
        filesystem, path = _filesystem(self.remote)
        try:
            with filesystem.open_input_stream(f"{path}/{filename}") as stream:
                record = json.loads(stream.read())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def write_json(self, filename: str, record: dict[str, Any]) -> None:
        """One of the run's files written where the run lives (and in the mirror)."""
        run_files.write_json(self.local / filename, record)
        if self.remote is not None:
            _put(f"{self.remote}/{filename}", json.dumps(record, indent=2).encode())


def locate(storage: str, stem: str, name: str) -> RunLocation:
    if not is_uri(storage):
        return RunLocation(Path(storage).expanduser().resolve() / stem / name)
    remote = f"{storage.rstrip('/')}/{stem}/{name}"
    _check_bucket(remote)
    return RunLocation(mirror_root(storage) / stem / name, remote)


def fetched(run: str) -> Path:
    """A run directory to read (``platform.predict``, the notebook API): a folder as it is, or a
    run URI's files (not its checkpoints) copied into a folder of this process's own, apart from
    the mirror a run of that name may be training into and from another reader's copy; it is
    removed when the process ends."""
    if not is_uri(run):
        return Path(run).expanduser()
    remote = run.rstrip("/")
    _check_bucket(remote)
    (cache_root() / "fetched").mkdir(parents=True, exist_ok=True)
    copy_root = Path(tempfile.mkdtemp(prefix="run-", dir=cache_root() / "fetched"))
    atexit.register(shutil.rmtree, copy_root, ignore_errors=True)
    _storage, stem, name = remote.rsplit("/", 2)  # the folders keep <stem>/<name>, which name the trainable
    copy = RunLocation(copy_root / stem / name, remote)
    copy.pull()
    return copy.local


def refuse_credentials(uri: str, option: str) -> None:
    """A key inside a location's URI would be written into folder names, run files and Ray's
    object store: credentials come from the environment or the node's role only."""
    if is_uri(uri) and "@" in uri.split("://", 1)[1].split("/", 1)[0]:
        raise UserError(
            f"{option} {redacted(uri)}: credentials do not belong in the URI; give them in the environment "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or the node's role"
        )


def _check_bucket(remote: str) -> None:
    """Before any work: a run that cannot store its checkpoints must not start."""
    filesystem, path = _filesystem(remote)
    try:
        _check_bucket_of(filesystem, path, remote, "--storage")
    except OSError as err:  # no credentials, endpoint down
        raise UserError(f"--storage {remote}: {str(err).splitlines()[0]}") from None


def check_writable(where: str, option: str) -> None:
    """Before Ray starts: ``--store`` (or another location) takes a file, so a missing bucket or a
    read-only folder is one line now, not an ``OSError`` inside a Ray Data task later."""
    refuse_credentials(where, option)
    probe = f"{where.rstrip('/')}/.rayplatform-probe-{secrets.token_hex(4)}"
    try:
        if is_uri(where):
            filesystem, path = pafs.FileSystem.from_uri(probe)
            _check_bucket_of(filesystem, path, where, option)
            with filesystem.open_output_stream(path) as stream:
                stream.write(b"probe")
            filesystem.delete_file(path)
        else:
            Path(where).expanduser().mkdir(parents=True, exist_ok=True)
            Path(probe).expanduser().write_bytes(b"probe")
            Path(probe).expanduser().unlink()
    except (OSError, ValueError) as err:
        raise UserError(f"{option} {where}: cannot write there ({getattr(err, 'strerror', None) or str(err).splitlines()[0]})") from None


def _check_bucket_of(filesystem: pafs.FileSystem, path: str, where: str, option: str) -> None:
    bucket = path.split("/", 1)[0]
    if filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
        raise UserError(f"{option} {where}: the bucket {bucket!r} does not exist")


def _put(uri: str, data: bytes) -> None:
    filesystem, path = _filesystem(uri)
    with filesystem.open_output_stream(path) as stream:
        stream.write(data)


def _put_if_absent(uri: str, data: bytes) -> bool:
    """Write ``uri`` unless it exists, as one step: False when it existed. S3 does it in one
    request (``If-None-Match: *``); other stores get a check and a write (see the module)."""
    if not uri.startswith("s3://"):
        filesystem, path = _filesystem(uri)
        if filesystem.get_file_info(path).type != pafs.FileType.NotFound:
            return False
        _put(uri, data)
        return True
    import boto3
    import botocore.exceptions

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except botocore.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise UserError(f"--storage {uri.rsplit('/', 1)[0]}: {err.response.get('Error', {}).get('Message') or err}") from None
    except botocore.exceptions.BotoCoreError as err:
        raise UserError(f"--storage {uri.rsplit('/', 1)[0]}: {err}") from None
    return True


def tiers_root(storage: str, stem: str) -> Path:
    """The folder whose ``<stem>/tiers/`` holds the tiers sweeps saved in ``storage``
    (``registry.saved_tier_path``): ``storage`` itself, or for a URI a copy of the bucket's tier
    files made now, this process's own (as ``fetched``'s): another command of this machine
    downloading or saving tiers meanwhile never changes it under this one."""
    if not is_uri(storage):
        return Path(storage).expanduser().resolve()
    remote = f"{storage.rstrip('/')}/{stem}/{TIERS_DIR}"
    _check_bucket(remote)
    (cache_root() / "tiers").mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="tiers-", dir=cache_root() / "tiers"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    local = root / stem / TIERS_DIR
    local.mkdir(parents=True)
    filesystem, path = _filesystem(remote)
    for info in filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        if info.type == pafs.FileType.File and info.base_name.endswith(".json"):
            pafs.copy_files(info.path, str(local / info.base_name), source_filesystem=filesystem)
    return root


def tier_uri(storage: str, root: Path, path: Path) -> str:
    """Where a file under ``tiers_root(storage, ...)`` lives in ``storage``."""
    return str(path) if not is_uri(storage) else f"{storage.rstrip('/')}/{path.relative_to(root).as_posix()}"


def tier_lock(storage: str, path: Path) -> Path:
    """The file whose lock one saving of the tier ``path`` holds: beside it in a folder; for a URI
    in this machine's cache (its copies of the tiers are each command's own)."""
    if not is_uri(storage):
        return path.with_name(f".{path.stem}.lock")
    (cache_root() / "locks").mkdir(parents=True, exist_ok=True)
    return cache_root() / "locks" / f"tier-{hashlib.sha256(f'{storage}/{path.name}'.encode()).hexdigest()[:16]}.lock"


def current_tier(storage: str, root: Path, path: Path) -> bytes | None:
    """The tier file as ``storage`` holds it now (None when there is none)."""
    if not is_uri(storage):
        return path.read_bytes() if path.exists() else None
    filesystem, remote = _filesystem(tier_uri(storage, root, path))
    try:
        with filesystem.open_input_stream(remote) as stream:
            return stream.read()
    except FileNotFoundError:
        return None


def upload_tier(storage: str, root: Path, path: Path) -> str:
    """A tier file written under ``tiers_root(storage, ...)``, uploaded where ``storage`` keeps it; its URI or path."""
    uri = tier_uri(storage, root, path)
    if is_uri(storage):
        _put(uri, path.read_bytes())
    return uri


def mirror_root(storage_uri: str) -> Path:
    """This machine's copy of a storage URI's run files; named so that two URIs never share one."""
    readable = storage_uri.split("://", 1)[1].strip("/").replace("/", "_")
    return cache_root() / "storage" / f"{readable}-{hashlib.sha256(storage_uri.encode()).hexdigest()[:8]}"


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    refuse_credentials(uri, "--storage")
    try:
        return pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as err:
        raise UserError(f"--storage {uri}: {str(err).splitlines()[0]}") from None
