"""What ``python -m platform.run asl --name N --resume`` continues from: the run directory's files,
or, where a crash tore or lost one of them, what the run's newest readable checkpoint holds.

Every checkpoint holds the run's ``config.json``, ``meta.json`` and ``run.json`` (its tier, launch
and start) beside the training state, so a torn ``config.json``, ``meta.json`` or ``manifest.json``
costs no work: each is written again from the checkpoint, with a ``warning:`` line, before Ray
starts. A run with nothing to continue from (no readable config and no checkpoint) is one
``error:`` line that says how to start again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from platform import config as config_lib
from platform.data.store import filesystem, join
from platform.errors import UserError
from platform.runs import run_files
from platform.runs.storage import RunLocation
from platform.train import checkpoints


@dataclasses.dataclass(frozen=True)
class Resumed:
    """A run to continue: its tier, config, and the manifest it was started with."""

    tier: str
    cfg: Any
    manifest: dict


def recover(location: RunLocation, config_cls: type, warn: Callable[[str], None]) -> Resumed:
    """The run at ``location`` (its files pulled into ``location.local``), its torn files written
    again from its newest readable checkpoint."""
    run_dir = location.local
    saved = _newest_checkpoint_files(location.run_uri)
    shown = location.remote or str(run_dir)
    values = _readable(run_dir / run_files.CONFIG_FILE, warn)
    if values is None:
        if saved is None:
            raise UserError(
                f"cannot resume {shown}: its {run_files.CONFIG_FILE} is missing or unreadable and it has no checkpoint; "
                "nothing was trained yet: start the run again under another --name (or delete that folder)"
            )
        values = saved["config"]
        config_lib.save(config_lib.from_dict(config_cls, values), run_dir / run_files.CONFIG_FILE)
        warn(f"warning: {run_files.CONFIG_FILE} rewritten from checkpoint {saved['folder']}")
    cfg = config_lib.from_dict(config_cls, values)
    if _readable(run_dir / run_files.META_FILE, warn) is None:
        if saved is None:  # nothing trained yet: the data is read afresh, with nothing to match
            (run_dir / run_files.META_FILE).unlink(missing_ok=True)
        else:
            run_files.write_json(run_dir / run_files.META_FILE, saved["meta"])
            warn(f"warning: {run_files.META_FILE} rewritten from checkpoint {saved['folder']}")
    manifest = _readable(run_dir / run_files.MANIFEST_FILE, warn)
    if manifest is None:
        manifest = _rebuilt_manifest(saved, cfg)
        run_files.write_json(run_dir / run_files.MANIFEST_FILE, manifest)
        source = f"checkpoint {saved['folder']}" if saved else "the config (no checkpoint yet)"
        warn(f"warning: {run_files.MANIFEST_FILE} rebuilt from {source}; earlier attempts' times and restarts are not known")
    return Resumed(manifest.get("tier", "unknown"), cfg, manifest)


def _readable(path, warn: Callable[[str], None]) -> dict | None:
    """A JSON file of the run directory, or None (with a warning when it exists but is torn)."""
    if not path.exists():
        return None
    try:
        value = run_files.read_json(path)
    except (OSError, ValueError) as err:
        warn(f"warning: {path} is unreadable ({type(err).__name__}); taking it from the run's checkpoints")
        return None
    return value if isinstance(value, dict) else None


def _newest_checkpoint_files(run_uri: str) -> dict | None:
    """Config, meta and run record of the newest checkpoint that has them whole: those Ray Train's
    snapshot records, then the folders it has not recorded yet (it writes the snapshot some time
    after a checkpoint), newest first. Each holds the one config and meta of the run."""
    fs, path = filesystem(run_uri)
    recorded = [row["dir"] for row in checkpoints.recorded(checkpoints.read_snapshot(run_uri))]
    for name in [*recorded, *sorted(set(checkpoints.folders(run_uri)) - set(recorded), reverse=True)]:
        folder = join(path, name)
        try:
            config, meta = _json(fs, join(folder, run_files.CONFIG_FILE)), _json(fs, join(folder, run_files.META_FILE))
        except (OSError, ValueError):
            continue
        try:
            run = _json(fs, join(folder, checkpoints.RUN_FILE))
        except (OSError, ValueError):  # a checkpoint from before run.json was written
            run = {}
        return {"config": config, "meta": meta, "run": run, "folder": name}
    return None


def _json(fs, path: str) -> Any:
    with fs.open_input_stream(path) as stream:
        return json.loads(stream.read().decode("utf-8"))


def _rebuilt_manifest(saved: dict | None, cfg: Any) -> dict:
    run = (saved or {}).get("run", {})
    return {
        "started": run.get("started"),
        "resumes": 0,
        "tier": run.get("tier", "unknown"),
        "launch": run.get("launch"),
        "config": config_lib.to_dict(cfg),
        "status": "interrupted",
        "recovered_from": saved["folder"] if saved else None,
    }
