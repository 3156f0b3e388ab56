"""Predict with the best model of a finished run.

    python -m platform.predict runs/asl/fast-20261122-101500 sequence.parquet [more.parquet ...]

Prints, for each input, the trainable's prediction (for classifiers the top labels with their
probabilities) and the time a prediction took (the call's time over its predictions, file reading
included). Runs on the CPU, without Ray.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from platform import registry
from platform.contract import Trainable
from platform.errors import UserError, exit_on_user_error
from platform.runs import run_files, storage


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m platform.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run directory written by python -m platform.run, or its URI (s3://...)")
    parser.add_argument("inputs", nargs="+", help="what the trainable predicts from (files, texts...)")
    parser.add_argument("--top", type=int, default=5, help="labels shown per input (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object a line")
    return parser


def format_prediction(prediction: dict, top: int, milliseconds: float) -> str:
    lines = [f"{prediction['input']}  ({milliseconds:.1f} ms)"]
    for entry in prediction.get("top", [])[:top]:
        lines.append(f"  {entry['label']:<24} {entry['prob']:.3f}")
    for key, value in prediction.items():
        if key not in ("input", "top"):
            lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Trainable | None, dict]:
    """The command line, with the options the run's trainable adds (``--beam``, ``--clip``...)."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("run_dir", nargs="?")
    run_dir = first.parse_known_args(argv)[0].run_dir
    parser = build_parser()
    common = {action.dest for action in parser._actions}
    local = storage.fetched(run_dir) if run_dir else None  # an s3:// run's files, copied here
    trainable = registry.load(trainable_of(local, shown=run_dir)) if local else None
    if trainable is not None:
        trainable.add_predict_arguments(parser.add_argument_group(f"options of {trainable.stem}"))
    args = parser.parse_args(argv)
    args.run_dir = local
    return args, trainable, {key: value for key, value in vars(args).items() if key not in common}


def trainable_of(run_dir: Path, shown: str | None = None) -> str:
    """The run's trainable, as ``registry.load`` takes it: its manifest says (``registry.recorded``);
    a torn manifest (a crash, a full disk) costs no prediction, since runs live in
    ``<storage>/<stem>/<name>``. ``shown``: the run as the user named it (its URI, where
    ``run_dir`` is this machine's copy)."""
    manifest_path = run_dir / run_files.MANIFEST_FILE
    named = f"{(shown or str(run_dir)).rstrip('/')}/{run_files.MANIFEST_FILE}"
    if not manifest_path.exists():
        raise UserError(f"{shown or run_dir} is not a run directory (no {run_files.MANIFEST_FILE})")
    try:
        return registry.recorded(run_files.read_json(manifest_path))
    except (ValueError, KeyError) as err:
        stem = run_dir.resolve().parent.name
        if stem not in registry.stems():
            raise UserError(f"{named} is unreadable ({type(err).__name__}) and the folder names no trainable") from None
        print(f"warning: {named} is unreadable ({type(err).__name__}); the run is a {stem} run by its folder", file=sys.stderr)
        return stem


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args, trainable, options = parse_args(argv)
    import torch  # here, not above: --help prints without it

    from platform.runs import artifacts

    cfg, meta, model = artifacts.load_run(args.run_dir, trainable)
    started = time.perf_counter()
    # One call: a trainable may read several arguments as one input (an image and its caption).
    with torch.inference_mode():
        predictions = trainable.predict(model, args.inputs, cfg, meta, **options)
    milliseconds = (time.perf_counter() - started) * 1000 / max(1, len(predictions))
    for prediction in predictions:
        if args.json:
            print(json.dumps({**prediction, "ms": round(milliseconds, 2)}))
        else:
            print(format_prediction(prediction, args.top, milliseconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
