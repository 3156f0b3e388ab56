"""Every trainable's data readers fuzzed with hypothesis: corrupted real-format folders.

Each example copies a folder (a trimmed copy of the real sample in ../shared/datasets, or what the
trainable's synthetic writer wrote), corrupts one to three of its files (CSV cells set to NUL, inf,
NaN, an empty or huge value or a path outside the folder; a column dropped, added or renamed; a
JSON value of another kind; a parquet column emptied, mistyped or made NaN and inf; a file cut,
emptied, deleted or overwritten with random bytes) and reads it as ``platform.run STEM --data``
does: ``build_datasets`` either returns rows Arrow can hold (Ray Data's input) or raises a
``UserError``, never another exception; ``preprocess`` of the rows that read the corrupted file
does the same, and no NaN or inf reaches its output. Derandomized: CI explores the same examples.

    .venv/bin/python -m pytest tests/test_fuzz_data.py
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import shared_dataset
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from platform import config as config_lib
from platform import registry
from platform.errors import UserError

FUZZ = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow],
)
# Small synthetic sets: the writer's format, not its size, is what is corrupted.
SYNTHETIC = {
    "asl": ["synthetic_signs=2", "synthetic_sequences=8", "synthetic_frames=6"],
    "captioning": ["synthetic_images=10"],
    "emotion": ["synthetic_clips=12"],
    "gender_bias": ["synthetic_samples=8"],
    "xr2text": ["synthetic_studies=8", "synthetic_image_size=32"],
}
# What a corrupted cell holds: nothing, NUL, paths out of the folder, numbers no reader can use
# (those most often where a number was).
NUMBER_CELLS = st.sampled_from(["inf", "-inf", "nan", "1e309", "-1", "1.5", str(2**64), "9" * 400])
ANY_CELLS = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "NA",
        '"',
        "\n",
        "x" * 3000,
        "../../outside.jpg",
        "/etc/passwd",
        "~no-such-user/x",
        "images/../../x",
        "\ufeff",
    ]
) | st.text(max_size=12)


def cell_values(old: str) -> st.SearchStrategy:
    try:
        float(old)
    except ValueError:
        return ANY_CELLS | NUMBER_CELLS
    return NUMBER_CELLS | ANY_CELLS


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6) | st.just("\ud800"),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


# ---------------------------------------------------------------- the folders corrupted


def trim_csv(source: Path, target: Path, rows: int) -> None:
    """The header and the first ``rows`` lines of a CSV (by lines: the real MELD text is cp1252 in places)."""
    target.write_bytes(b"".join(source.read_bytes().splitlines(keepends=True)[: rows + 1]))


def real_asl(folder: Path) -> None:
    shutil.copytree(shared_dataset("asl"), folder)


def real_captioning(folder: Path) -> None:
    source = shared_dataset("flickr8k")
    folder.mkdir()
    trim_csv(source / "captions.txt", folder / "captions.txt", 60)
    shutil.copytree(source / "Images", folder / "Images")


def real_emotion(folder: Path) -> None:
    source = shared_dataset("meld")
    folder.mkdir()
    trim_csv(source / "train_sent_emo.csv", folder / "train_sent_emo.csv", 120)
    trim_csv(source / "dev_sent_emo.csv", folder / "dev_sent_emo.csv", 40)


def real_gender_bias(folder: Path) -> None:
    """The labeler's output for the real posts: labels.csv (a score for each) beside their images."""
    source = shared_dataset("social")
    folder.mkdir()
    shutil.copytree(source / "images", folder / "images")
    with (
        (source / "posts.csv").open(encoding="utf-8", newline="") as posts,
        (folder / "labels.csv").open("w", encoding="utf-8", newline="") as out,
    ):
        writer = csv.writer(out)
        writer.writerow(["post_id", "image_path", "caption", "score", "model", "cost_usd"])
        for number, post in enumerate(csv.DictReader(posts)):
            writer.writerow([post["post_id"], post["image_path"], post["caption"], number % 11, "test-model", "0.0001"])


def real_xr2text(folder: Path) -> None:
    """The real reports and projections of the first studies, with a small PNG for each image."""
    source = shared_dataset("iu_xray")
    folder.mkdir()
    trim_csv(source / "indiana_reports.csv", folder / "indiana_reports.csv", 30)
    trim_csv(source / "indiana_projections.csv", folder / "indiana_projections.csv", 60)
    (folder / "images").mkdir()
    with (folder / "indiana_projections.csv").open(encoding="utf-8", newline="") as projections:
        for row in csv.DictReader(projections):
            Image.new("L", (24, 24), 128).save(folder / "images" / row["filename"])


REAL = {"asl": real_asl, "captioning": real_captioning, "emotion": real_emotion, "gender_bias": real_gender_bias, "xr2text": real_xr2text}


def smoke_config(stem: str, *sets: str) -> Any:
    return registry.resolve(stem, "smoke", list(SYNTHETIC[stem]) + list(sets))


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """(stem, "real" or "synthetic") -> a folder to copy and corrupt; real ones skip where the samples are absent."""
    root = tmp_path_factory.mktemp("fuzz-bases")
    made = {}
    for stem in registry.stems():
        trainable = registry.load(stem)
        made[stem, "synthetic"] = trainable.package.synthetic_dataset(smoke_config(stem))
        try:
            REAL[stem](root / stem)
        except pytest.skip.Exception:
            continue
        made[stem, "real"] = root / stem
    return made


def cut(raw: bytes, draw) -> bytes:
    return raw[: draw(st.integers(0, max(len(raw) - 1, 0)), label="cut at")]


def inserted(raw: bytes, draw) -> bytes:
    at = draw(st.integers(0, len(raw)), label="insert at")
    return raw[:at] + draw(st.binary(min_size=1, max_size=8) | st.just(b"\x00"), label="bytes") + raw[at:]


BYTE_MUTATIONS = {
    "cut": cut,
    "insert": inserted,
    "random": lambda raw, draw: draw(st.binary(max_size=64), label="bytes"),
    "empty": lambda raw, draw: b"",
    "nul": lambda raw, draw: b"\x00" * len(raw),
}


def csv_mutated(raw: bytes, draw) -> bytes:
    """One CSV change: a cell, a column dropped, added or renamed, or the header alone."""
    text = raw.decode("utf-8", "surrogateescape")  # cp1252 bytes survive the round trip
    try:
        table = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error:  # corrupted already (a NUL-filled file is one field past csv's limit)
        return raw
    if not table or not table[0]:
        return raw
    width = len(table[0])
    column = draw(st.integers(0, width - 1), label="column")
    change = draw(st.sampled_from(["cells"] * 3 + ["column"] * 2 + ["drop", "add", "rename", "header only"]), label="csv change")
    if change == "cells":
        for _ in range(draw(st.integers(1, 8), label="cells")):
            row = draw(st.integers(0, len(table) - 1), label="row")
            if column < len(table[row]):
                table[row][column] = draw(cell_values(table[row][column]), label="cell")
            column = draw(st.integers(0, width - 1), label="next column")
    elif change == "column":
        value = draw(cell_values(table[-1][column] if column < len(table[-1]) else ""), label="every cell")
        table = [row if number == 0 else [value if i == column else cell for i, cell in enumerate(row)] for number, row in enumerate(table)]
    elif change == "drop":
        table = [row[:column] + row[column + 1 :] for row in table]
    elif change == "add":
        table = [row + [draw(ANY_CELLS, label="extra") if number else "extra"] for number, row in enumerate(table)]
    elif change == "rename":
        table[0][column] = draw(ANY_CELLS, label="header")
    else:
        table = table[:1]
    out = io.StringIO(newline="")
    csv.writer(out).writerows(table)
    return out.getvalue().encode("utf-8", "surrogateescape")


def json_mutated(raw: bytes, draw) -> bytes:
    """One JSON change: a value of another kind, a key dropped, or another document."""
    try:
        document = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(document, dict) and document and draw(st.booleans(), label="change a key"):
        key = draw(st.sampled_from(sorted(document)), label="key")
        if draw(st.booleans(), label="drop it"):
            del document[key]
        else:
            document[key] = draw(JSON_VALUES, label="value")
    else:
        document = draw(JSON_VALUES, label="document")
    return json.dumps(document).encode()


def parquet_mutated(raw: bytes, draw) -> bytes:
    """One landmark-column change: NaN, inf, nulls, another type, or the column gone."""
    try:
        table = pq.read_table(io.BytesIO(raw))
    except (pa.ArrowException, OSError):  # corrupted already
        return raw
    name = draw(st.sampled_from(table.column_names), label="parquet column")
    rows = table.num_rows
    replacement = draw(
        st.sampled_from(
            [
                pa.array([np.nan] * rows),
                pa.array([np.inf] * rows),
                pa.array([-1e30] * rows),
                pa.nulls(rows, pa.float64()),
                pa.array(["x"] * rows),
                pa.array([2**62] * rows),
                pa.array([-5] * rows, pa.int16()),
                None,
            ]
        ),
        label="replacement",
    )
    index = table.column_names.index(name)
    table = table.remove_column(index) if replacement is None else table.set_column(index, name, replacement)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def image_replaced(raw: bytes, draw) -> bytes:
    """Another valid image: a tiny one, of another mode or format."""
    mode = draw(st.sampled_from(["1", "L", "P", "RGBA", "CMYK", "I;16", "F"]), label="mode")
    size = (draw(st.integers(1, 3), label="width"), draw(st.integers(1, 3), label="height"))
    form = draw(st.sampled_from(["PNG", "TIFF", "GIF", "BMP"]), label="format")
    sink = io.BytesIO()
    try:
        Image.new(mode, size).save(sink, form)
    except (OSError, ValueError, KeyError):  # a mode the format cannot hold
        Image.new("L", size).save(sink, "PNG")
    return sink.getvalue()


FORMAT_MUTATIONS = {".csv": csv_mutated, ".txt": csv_mutated, ".json": json_mutated, ".parquet": parquet_mutated}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def corrupt(folder: Path, draw) -> Path:
    """One file of ``folder`` corrupted (or deleted); its path."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        return folder
    # The index files are what a reader parses: chosen as often as all the data files together.
    index_files = [p for p in files if p.suffix in (".csv", ".txt", ".json")]
    target = draw((st.sampled_from(index_files) if index_files else st.nothing()) | st.sampled_from(files), label="file")
    kinds = [*BYTE_MUTATIONS, "delete"]
    if target.suffix in FORMAT_MUTATIONS:
        kinds += ["format"] * 12
    if target.suffix in IMAGE_SUFFIXES:
        kinds += ["image"] * 2
    kind = draw(st.sampled_from(kinds), label=f"{target.relative_to(folder)}: mutation")
    event(f"{target.suffix} {kind}")
    if kind == "delete":
        target.unlink()
        return target
    mutation = {"format": FORMAT_MUTATIONS.get(target.suffix), "image": image_replaced}.get(kind) or BYTE_MUTATIONS[kind]
    target.write_bytes(mutation(target.read_bytes(), draw))
    return target


# ---------------------------------------------------------------- what reading them must do


def arrow_table(rows: list[dict]) -> pa.Table:
    """The raw rows as the Arrow table Ray Data makes of them (arrays as nested lists)."""
    return pa.Table.from_pylist(
        [{key: value.tolist() if isinstance(value, np.ndarray) else value for key, value in row.items()} for row in rows]
    )


def numpy_batch(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows as the numpy batch ``preprocess`` gets from Ray Data."""
    return {
        key: np.stack([row[key] for row in rows]) if isinstance(rows[0][key], np.ndarray) else np.array([row[key] for row in rows])
        for key in rows[0]
    }


def rows_reading(splits: dict[str, list[dict]], targets: list[Path]) -> list[dict]:
    """Up to two rows of one split (a split pads its arrays alike) whose files include a target,
    else of the first split with rows (an empty split is refused once preprocessed: platform/data/ingest.py)."""
    names = {target.name for target in targets}
    for rows in splits.values():
        touching = [row for row in rows if any(isinstance(v, str) and v and Path(v).name in names for v in row.values())]
        if touching:
            return touching[:2]
    return next((rows[:2] for rows in splits.values() if rows), [])


@pytest.mark.parametrize("source", ["real", "synthetic"])
@pytest.mark.parametrize("stem", registry.stems())
@FUZZ
@given(data=st.data())
def test_a_corrupted_data_folder_reads_or_is_one_user_error(stem, source, bases, data):
    if (stem, source) not in bases:
        pytest.skip(f"real-format sample for {stem} is absent")
    trainable = registry.load(stem)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "data"
        shutil.copytree(bases[stem, source], folder)
        targets = [corrupt(folder, data.draw) for _ in range(data.draw(st.integers(1, 3), label="files corrupted"))]
        cfg = config_lib.resolve(
            trainable.Config, registry.tier_overrides(trainable.space, "smoke"), None, [*SYNTHETIC[stem], f"data_dir={folder}"]
        )
        try:
            splits, meta = trainable.build_datasets(cfg)
        except UserError:
            event("refused")
            return
        event("read")
        for rows in splits.values():
            arrow_table(rows)
        json.dumps(meta, default=str)  # as run_files.write_json writes meta.json
        rows = rows_reading(splits, targets)
        try:
            features = trainable.preprocess(numpy_batch(rows), cfg) if rows else {}
        except UserError:
            event("refused in preprocessing")
            return
        for name, values in features.items():
            for value in values if isinstance(values, list) else [values]:
                assert not np.issubdtype(value.dtype, np.floating) or np.isfinite(value).all(), f"{name} holds NaN or inf"


# ---------------------------------------------------------------- what the fuzzing found, one by one


MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"


@pytest.mark.parametrize("dialogue", ["inf", "-inf", "1e309", "nan", "1.5", str(2**64)])
def test_a_meld_id_that_is_not_a_whole_number_is_one_user_error(tmp_path, dialogue):
    """An id of inf ended in an OverflowError traceback; 1e300 became a 300-digit id Arrow cannot hold."""
    from trainables.emotion import data

    rows = [f"1,Hi.,Ross,joy,positive,{dialogue},0,1,1,a,b\n", "2,Oh.,Rachel,neutral,neutral,1,1,1,1,a,b\n"]
    (tmp_path / "train_sent_emo.csv").write_text(MELD_HEADER + "".join(rows))
    (tmp_path / "dev_sent_emo.csv").write_text(MELD_HEADER + rows[1])
    with pytest.raises(UserError, match=rf"train_sent_emo.csv line 2: Dialogue_ID '{dialogue}' is not an integer"):
        data.read_meld(str(tmp_path))
    (tmp_path / "train_sent_emo.csv").write_text(MELD_HEADER + "".join(rows).replace(dialogue, "3.0", 1))
    assert data.read_meld(str(tmp_path))[0]["train"][0]["dialogue_id"] == 3


@pytest.mark.parametrize("sign_map", ["[true]", '["sign0", "sign1"]', '{"sign0": 1e999, "sign1": 0}'])
def test_a_sign_map_that_is_not_a_sign_to_index_object_is_one_user_error(tmp_path, sign_map):
    """A list was indexed by its own items (IndexError); an index of 1e999 ended in an OverflowError."""
    from trainables.asl.landmarks import read_index

    folder = tmp_path / "asl"
    shutil.copytree(registry.load("asl").package.synthetic_dataset(smoke_config("asl")), folder)
    (folder / "sign_to_prediction_index_map.json").write_text(sign_map)
    with pytest.raises(UserError, match="sign_to_prediction_index_map.json: not a sign -> index object"):
        read_index(str(folder))


def test_a_path_with_a_nul_byte_in_a_data_file_is_one_user_error(tmp_path):
    """Paths read from a data file: no file's name holds a NUL byte, and the message shows it escaped."""
    from trainables.captioning.data import read_flickr
    from trainables.gender_bias.data import read_labels

    for image in ("images/a\x00b.jpg", "/tmp/a\x00b.jpg"):
        (tmp_path / "labels.csv").write_text(f"post_id,image_path,caption,score\np1,{image},a caption,5\n")
        with pytest.raises(UserError, match=re.escape(f"line 2 (post p1): image_path {image!r} holds a NUL byte")):
            read_labels(str(tmp_path))
    (tmp_path / "Images").mkdir()
    (tmp_path / "captions.txt").write_text("image,caption\na\x00b.jpg,a dog runs\n")
    with pytest.raises(UserError, match=re.escape("captions.txt: path 'a\\x00b.jpg' holds a NUL byte")):
        read_flickr(str(tmp_path))
