"""The synthetic MELD set: the real layout (three CSVs, mp4 clips with audio) with a learnable signal.

Written once, cached, by ``python -m platform.run emotion`` when no ``--data`` is given:
``{train,dev,test}_sent_emo.csv`` and the clips in the real release's per-split folders
``train_splits/``, ``dev_splits_complete/`` and ``output_repeated_splits_test/``.

Every modality carries the emotion, each imperfectly: the utterance holds a cue word, the audio a
tone at the emotion's pitch, the frames the emotion's colour; each cue independently comes from a
random other emotion 35% of the time, so one modality alone reaches about 70% accuracy and the three
together about 95%. Emotions follow MELD's imbalance (neutral 47% ... fear 3%), sentiment follows the
emotion (surprise is positive or negative at random), and 5% of the rows have no clip, as in MELD.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd

from platform.data.cache import cache_root, write_once
from platform.errors import UserError
from trainables.emotion.data import CLIP_FOLDERS, CSV_COLUMNS, CSV_FILES, EMOTIONS

SYNTHETIC_VERSION = 1
SAMPLE_RATE = 16000
FRAME_PIXELS = 32
FPS = 8
SECONDS = 1.0
SHARES = {"train": 0.7, "val": 0.15, "test": 0.15}
EMOTION_SHARES = (0.47, 0.17, 0.12, 0.11, 0.07, 0.03, 0.03)  # MELD's train distribution, EMOTIONS' order
CUE_NOISE = 0.35
MISSING_CLIPS = 0.05

TONES_HZ = (300, 420, 590, 820, 1150, 1600, 2250)
COLOURS = ((128, 128, 128), (250, 210, 40), (240, 120, 220), (220, 30, 30), (40, 70, 200), (90, 160, 40), (110, 40, 150))
CUES = (
    ("okay", "fine", "alright"),
    ("great", "wonderful", "awesome"),
    ("what", "really", "wow"),
    ("furious", "hate", "stop"),
    ("sad", "miss", "sorry"),
    ("gross", "yuck", "disgusting"),
    ("scared", "afraid", "help"),
)
FILLERS = ("so", "the", "we", "it", "is", "that", "you", "know", "I", "just", "guess", "today", "now", "here")
SENTIMENT_OF = {
    "neutral": "neutral",
    "joy": "positive",
    "anger": "negative",
    "sadness": "negative",
    "disgust": "negative",
    "fear": "negative",
}


def _cue(rng: np.random.Generator, emotion: int) -> int:
    return int(rng.integers(len(EMOTIONS))) if rng.random() < CUE_NOISE else emotion


def _utterance(rng: np.random.Generator, emotion: int) -> str:
    words = list(rng.choice(FILLERS, size=int(rng.integers(3, 7))))
    words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(CUES[_cue(rng, emotion)])))
    sentence = " ".join(words).capitalize()
    return sentence + ("?" if rng.random() < 0.3 else "!" if rng.random() < 0.3 else ".")


def write_clip(path: Path, rng: np.random.Generator, tone_emotion: int, colour_emotion: int) -> None:
    """About a second of h264 video (a coloured square drifting on grey) and AAC audio (a noisy tone)."""
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=FPS, options={"preset": "ultrafast"})
        video.width = video.height = FRAME_PIXELS
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        colour = np.clip(np.array(COLOURS[colour_emotion]) + rng.integers(-25, 26, 3), 0, 255).astype(np.uint8)
        for index in range(int(FPS * SECONDS)):
            pixels = np.full((FRAME_PIXELS, FRAME_PIXELS, 3), 100, np.uint8)
            corner = 4 + (index + int(rng.integers(3))) % 8
            pixels[corner : corner + 16, corner : corner + 16] = colour
            for packet in video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        times = np.arange(int(SAMPLE_RATE * SECONDS)) / SAMPLE_RATE
        pitch = TONES_HZ[tone_emotion] * (1 + rng.uniform(-0.03, 0.03))
        wave = 0.3 * np.sin(2 * np.pi * pitch * times) + rng.normal(0, 0.05, times.size)
        frame = av.AudioFrame.from_ndarray(wave.astype(np.float32)[None, :], format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, 0, Fraction(1, SAMPLE_RATE)
        for packet in [*audio.encode(frame), *audio.encode(None)]:
            container.mux(packet)


def _timestamp(seconds: int) -> str:
    """MELD's subtitle time format, 00:21:00,049."""
    minutes, seconds = divmod(seconds, 60)
    return f"00:{minutes:02d}:{seconds:02d},000"


def _write_split(folder: Path, split: str, count: int, rng: np.random.Generator) -> None:
    clips = folder / CLIP_FOLDERS[split][0]
    clips.mkdir()
    rows = []
    for k in range(count):
        emotion = int(rng.choice(len(EMOTIONS), p=EMOTION_SHARES))
        name = EMOTIONS[emotion]
        sentiment = SENTIMENT_OF.get(name) or str(rng.choice(["positive", "negative"]))
        dialogue, utterance = divmod(k, 4)
        if rng.random() >= MISSING_CLIPS:
            write_clip(clips / f"dia{dialogue}_utt{utterance}.mp4", rng, _cue(rng, emotion), _cue(rng, emotion))
        start = 60 + 5 * k
        rows.append(
            {
                "Sr No.": k + 1,
                "Utterance": _utterance(rng, emotion),
                "Speaker": str(rng.choice(["Ross", "Rachel", "Joey"])),
                "Emotion": name,
                "Sentiment": sentiment,
                "Dialogue_ID": dialogue,
                "Utterance_ID": utterance,
                "Season": 1,
                "Episode": 1,
                "StartTime": _timestamp(start),
                "EndTime": _timestamp(start + 1),
            }
        )
    pd.DataFrame(rows, columns=list(CSV_COLUMNS)).to_csv(folder / CSV_FILES[split], index=False)


def _write_synthetic(folder: Path, clips: int) -> None:
    rng = np.random.default_rng(SYNTHETIC_VERSION)
    counts = {split: max(2, round(clips * share)) for split, share in SHARES.items()}
    for split, count in counts.items():
        _write_split(folder, split, count, rng)


def synthetic_dataset(cfg: Any) -> Path:
    """The cached synthetic set of about cfg.synthetic_clips utterances, written once (temp dir, then rename)."""
    if cfg.synthetic_clips < 12:
        raise UserError("config key 'synthetic_clips' must be at least 12")
    folder = cache_root() / "emotion" / f"synthetic-v{SYNTHETIC_VERSION}-clips{cfg.synthetic_clips}"
    return write_once(folder, lambda partial: _write_synthetic(partial, cfg.synthetic_clips))
