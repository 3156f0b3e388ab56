"""The MELD layout: ``{train,dev,test}_sent_emo.csv`` and clips ``dia{D}_utt{U}.mp4``, read without Ray.

Used by ``python -m platform.run emotion --data DIR``. DIR holds the three CSVs (columns Sr No.,
Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID, Season, Episode, StartTime,
EndTime; the test CSV is optional) and the clips, in DIR itself or in the real release's per-split
folders (``train_splits/``, ``dev_splits_complete/``, ``output_repeated_splits_test/``), which come
first: the real release reuses clip names across splits, so one flat folder suits one split's clips
or a sample, not the whole release. With a test CSV, dev is the platform's ``val`` split and test its
test split. Without one (the shared real sample holds train and dev only), ``val`` is carved from
train by dialogue (``VAL_SHARE`` of the dialogues, chosen by a hash of the Dialogue_ID, so the same
ones in every run and seed) and dev becomes the test split, scored once after training: dev then
never picks a checkpoint, an epoch or a tier, so its figure is an honest held-out measurement.
Dialogue context (``dialogue_inputs``) is built inside each split from earlier utterances only.
A row whose clip is absent
(or empty) keeps its text and has its audio and video masked; the counts go into meta. The real
CSVs are cp1252 in places, with mojibake smart quotes. An empty CSV, or one with a header but no
rows, is a ``UserError`` naming it.
"""

from __future__ import annotations

import hashlib
import math
import posixpath

import numpy as np
import pandas as pd

from platform.data import locations
from platform.data.content_hash import content_hash
from platform.data.locations import Folder
from platform.errors import UserError
from trainables import files

EMOTIONS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
SENTIMENTS = ("neutral", "positive", "negative")
CSV_COLUMNS = (
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
)
REQUIRED_COLUMNS = ("Utterance", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")
CSV_FILES = {"train": "train_sent_emo.csv", "val": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
# Without a test CSV: the share of train's dialogues held out as val (MELD's dev is about 10% of train).
VAL_SHARE = 0.1
# The real release's folder first (the synthetic set writes there), then common re-packagings.
CLIP_FOLDERS = {
    "train": ("train_splits", "train", "train_videos"),
    "val": ("dev_splits_complete", "dev_splits", "dev", "dev_videos"),
    "test": ("output_repeated_splits_test", "test_splits", "test", "test_videos"),
}
# UTF-8 read as cp1252 (the real CSVs' "Youâ€™re"), and the smart quotes tokenizers split oddly.
MOJIBAKE_MARKERS = ("â€", "Ã")
PLAIN_QUOTES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2014": "-",
        "\u2013": "-",
        "\u2026": "...",
        "\u0092": "'",
        "\u0085": "...",
        "\u0097": "-",
    }
)


def decode_text(raw: bytes) -> str:
    """UTF-8 when it is, else cp1252, else latin-1 (cp1252 leaves five bytes undefined)."""
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def clean_utterance(text: str) -> str:
    """Mojibake repaired where it round-trips, smart quotes as ASCII, whitespace collapsed."""
    if any(marker in text for marker in MOJIBAKE_MARKERS):
        try:
            text = text.encode("cp1252").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return " ".join(text.translate(PLAIN_QUOTES).split())


def read_csv(path: str) -> tuple[pd.DataFrame, bytes]:
    try:
        raw = locations.read_bytes(path)
    except OSError:
        raise UserError(f"{path}: not found or unreadable") from None
    return files.read_csv(decode_text(raw), path, REQUIRED_COLUMNS, dtype=str, keep_default_na=False), raw


def clip_index(root: Folder, split: str) -> dict[str, str]:
    """Clip file name -> location (a path or URI), over the split's folders and DIR itself (one
    listing a folder); "" for an empty file, as missing as an absent one (the real release has a few)."""
    found: dict[str, str] = {}
    for folder in (*CLIP_FOLDERS[split], ""):
        for name, size in root.listing(folder).items():
            if name.endswith(".mp4") and name not in found:
                found[name] = root.path(posixpath.join(folder, name)) if size > 0 else ""
    return found


def _label(value: str, classes: tuple[str, ...], where: str, column: str) -> int:
    name = value.strip().lower()
    if name not in classes:
        raise UserError(f"{where}: {column} {value!r} is not one of {', '.join(classes)}")
    return classes.index(name)


def _integer(value: str, where: str, column: str) -> int:
    """``value`` as an id: a whole number ("3" or "3.0") that Arrow's int64 holds."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not number.is_integer() or abs(number) >= 2**63:  # NaN and inf are not integers either
        raise UserError(f"{where}: {column} {value!r} is not an integer")
    return int(number)


def split_rows(frame: pd.DataFrame, clips: dict[str, str], shown: str, max_rows: int) -> list[dict]:
    """Rows {utterance, speaker, clip ("" when absent), emotion, sentiment, dialogue_id, utterance_id}."""
    rows = []
    for line, record in enumerate(frame.to_dict("records"), start=2):
        if max_rows and len(rows) >= max_rows:
            break
        where = f"{shown} line {line}"
        dialogue = _integer(record["Dialogue_ID"], where, "Dialogue_ID")
        utterance_id = _integer(record["Utterance_ID"], where, "Utterance_ID")
        rows.append(
            {
                "utterance": clean_utterance(record["Utterance"]),
                "speaker": clean_utterance(record.get("Speaker", "")),
                "clip": clips.get(f"dia{dialogue}_utt{utterance_id}.mp4", ""),
                "emotion": _label(record["Emotion"], EMOTIONS, where, "Emotion"),
                "sentiment": _label(record["Sentiment"], SENTIMENTS, where, "Sentiment"),
                "dialogue_id": dialogue,
                "utterance_id": utterance_id,
            }
        )
    return rows


def held_out_dialogue(dialogue: int) -> bool:
    """Whether a train dialogue goes to val when there is no test CSV: a hash, not the file order."""
    digest = hashlib.sha256(f"meld-val-{dialogue}".encode()).digest()
    return int.from_bytes(digest[:4], "big") < VAL_SHARE * 2**32


def carve_validation(splits: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """train/val(dev) without test -> train minus held-out dialogues, val those dialogues, test dev."""
    train = splits["train"]
    return {
        "train": [row for row in train if not held_out_dialogue(row["dialogue_id"])],
        "val": [row for row in train if held_out_dialogue(row["dialogue_id"])],
        "test": splits["val"],
    }


def read_meld(data_dir: str, max_rows: int = 0) -> tuple[dict[str, list[dict]], dict]:
    """Rows by split (train, val, test) and meta of a MELD folder; without a test CSV, val is carved
    from train and dev is the test split (module docstring)."""
    root = Folder(data_dir)
    if not root.exists():
        raise UserError(f"{data_dir}: data folder not found")
    splits, csv_files, clips = {}, [], {}
    for split, name in CSV_FILES.items():
        if split == "test" and not root.is_file(name):
            continue
        frame, raw = read_csv(root.path(name))
        splits[split] = split_rows(frame, clip_index(root, split), root.shown(name), max_rows)
        csv_files.append(raw)
        clips.update({f"{split}/{row['clip']}": row["clip"] for row in splits[split] if row["clip"]})
    carved = "test" not in splits
    if carved:
        splits = carve_validation(splits)
    meta = {
        "data_path": root.location,
        "content_hash": content_hash(csv_files, clips),
        "max_rows": max_rows,
        "split_sources": (
            {
                "train": f"{CSV_FILES['train']} less {VAL_SHARE:.0%} of its dialogues (by Dialogue_ID hash)",
                "val": f"those dialogues of {CSV_FILES['train']}",
                "test": CSV_FILES["val"],
            }
            if carved
            else {split: CSV_FILES[split] for split in splits}
        ),
        "split_sizes": {split: len(rows) for split, rows in splits.items()},
        "missing_clips": {split: sum(not row["clip"] for row in rows) for split, rows in splits.items()},
    }
    return splits, meta


def class_counts(rows: list[dict], target: str, classes: tuple[str, ...]) -> list[int]:
    return np.bincount([row[target] for row in rows], minlength=len(classes)).tolist()


def class_weights(counts: list[int], power: float = 1.0) -> list[float]:
    """Inverse frequency to ``power`` (1: balanced, 0.5: softened), normalised so a balanced set
    weighs 1 everywhere; absent classes weigh 1."""
    counts_array = np.asarray(counts, dtype=np.float64)
    weights = (counts_array.sum() / (len(counts) * np.maximum(counts_array, 1))) ** power
    weights[counts_array == 0] = 1.0
    return [round(float(w), 6) for w in weights]


def oversample(rows: list[dict], target: str, seed: int) -> list[dict]:
    """Every class drawn (with replacement, seeded) up to the largest class's count, then shuffled."""
    rng = np.random.default_rng(seed)
    labels = np.array([row[target] for row in rows])
    largest = np.bincount(labels).max()
    picked = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        extra = rng.choice(members, size=largest - len(members), replace=True)
        picked += [*members, *extra]
    return [rows[i] for i in rng.permutation(picked)]


def dialogue_inputs(rows: list[dict], turns: int) -> list[dict]:
    """Each row with ``context``: its dialogue's previous ``turns`` utterances, "Speaker: text", oldest
    first ("" when turns is 0 or it opens the dialogue), and ``target``: its own utterance,
    speaker-tagged when there is context. Only utterances of the same dialogue with a lower
    Utterance_ID count: never a later one, never another dialogue's."""
    by_dialogue: dict[int, list[dict]] = {}
    for row in rows:
        by_dialogue.setdefault(row["dialogue_id"], []).append(row)
    for members in by_dialogue.values():
        members.sort(key=lambda row: row["utterance_id"])
    joined = []
    for row in rows:
        earlier = [r for r in by_dialogue[row["dialogue_id"]] if r["utterance_id"] < row["utterance_id"]]
        context = " ".join(tagged(r) for r in earlier[-turns:]) if turns and earlier else ""
        joined.append({**row, "context": context, "target": tagged(row) if turns else row["utterance"]})
    return joined


def tagged(row: dict) -> str:
    return f"{row['speaker']}: {row['utterance']}" if row.get("speaker") else row["utterance"]
