"""``--data s3://...``: every trainable reads its data from an object store as from a folder
(against the loopback S3 server, moto), and a missing bucket or prefix is one line before Ray starts.
A run that trains on data in S3 end to end: tests/test_storage.py.

.venv/bin/python -m pytest tests/test_data_s3.py
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import S3_BUCKET, run_command, upload

from platform import registry
from platform.data.locations import check_data_folder
from platform.errors import UserError

STEMS = ("asl", "xr2text", "captioning", "gender_bias", "emotion")


def _as_uri(value, folder: str, uri: str):
    """A row's value with the local folder's paths written as the bucket's URIs."""
    return uri + value[len(folder) :] if isinstance(value, str) and value.startswith(folder + "/") else value


def _same_rows(local: list[dict], remote: list[dict], folder: str, uri: str) -> None:
    assert len(local) == len(remote) > 0
    for mine, theirs in zip(local, remote):
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert np.array_equal(np.asarray(_as_uri(mine[key], folder, uri)), np.asarray(theirs[key])), key


def _batch(rows: list[dict]) -> dict[str, np.ndarray]:
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}


@pytest.mark.parametrize("stem", STEMS)
def test_every_trainable_reads_its_smoke_set_from_s3_as_from_its_folder(stem, s3_env):
    """Rows, splits and classes from the bucket are the folder's (the paths become URIs), and the
    first rows preprocess to the same arrays: landmarks, images and clips read from S3."""
    trainable = registry.load(stem)
    cfg = registry.resolve(stem, "smoke")
    local_rows, local_meta = trainable.build_datasets(cfg)
    folder = local_meta["data_path"]
    uri = upload(folder, f"data/{stem}")
    remote_rows, remote_meta = trainable.build_datasets(registry.resolve(stem, "smoke", data_dir=uri))
    assert remote_rows.keys() == local_rows.keys()
    for split in local_rows:
        _same_rows(local_rows[split], remote_rows[split], folder, uri)
    assert remote_meta["data_path"] == uri and remote_meta["content_hash"].startswith("sha256:")
    for key in local_meta.keys() - {"data_path", "content_hash", "captions_file"}:
        assert json.dumps(_as_uri(local_meta[key], folder, uri), default=str) == json.dumps(remote_meta[key], default=str), key
    local, remote = (trainable.preprocess(_batch(rows["val"][:2]), cfg) for rows in (local_rows, remote_rows))
    for key in local:  # a list holds rows of several lengths (asl's sequences)
        pairs = zip(local[key], remote[key]) if isinstance(local[key], list) else [(local[key], remote[key])]
        assert all(np.array_equal(mine, theirs) for mine, theirs in pairs), key


def test_a_missing_bucket_or_prefix_is_one_error_line_before_ray_starts(s3_env, tmp_path):
    with pytest.raises(UserError, match=f"data folder not found: s3://{S3_BUCKET}/no/such/prefix"):
        check_data_folder(f"s3://{S3_BUCKET}/no/such/prefix")
    for module, tier in (("run", ["--tier", "smoke"]), ("tune", ["--tiers", "smoke", "--dry-run"])):
        result = run_command(module, "asl", *tier, "--data", "s3://no-such-bucket/asl-signs", "--storage", str(tmp_path / "runs"))
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip() == "error: data folder not found: s3://no-such-bucket/asl-signs"
        assert "Ray" not in result.stdout and not (tmp_path / "runs").exists()
