"""A MELD clip decoded with PyAV: a log-mel spectrogram of its audio and a few sampled RGB frames.

Used in preprocessing by ``python -m platform.run emotion`` (once a clip: the platform caches the
decoded splits) and by ``python -m platform.predict RUN_DIR "utterance" --clip dia0_utt0.mp4``.
torchaudio is not a dependency: the mel filterbank (HTK scale, as VGGish) and the STFT are numpy.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import av
import numpy as np

from platform.data import locations
from platform.errors import UserError

WINDOW_SECONDS = 0.025  # VGGish's 25 ms windows every 10 ms
HOP_SECONDS = 0.010
LOG_OFFSET = 1e-6


@dataclass(frozen=True)
class ClipShape:
    """What preprocessing makes of every clip, so that batches stack."""

    sample_rate: int
    n_mels: int
    audio_seconds: float
    frames: int
    frame_size: int

    @property
    def samples(self) -> int:
        return round(self.sample_rate * self.audio_seconds)

    @property
    def hop(self) -> int:
        return max(1, round(self.sample_rate * HOP_SECONDS))

    @property
    def mel_steps(self) -> int:
        return 1 + self.samples // self.hop


@dataclass
class DecodedClip:
    mel: np.ndarray
    """[n_mels, mel_steps] float16 log-mel energies (zeros when the clip has no audio)."""
    frames: np.ndarray
    """[frames, 3, size, size] uint8 RGB (zeros when the clip has no video)."""
    has_audio: bool
    has_video: bool


def empty_clip(shape: ClipShape) -> DecodedClip:
    """A clip that is missing: both modalities masked."""
    return DecodedClip(
        mel=np.zeros((shape.n_mels, shape.mel_steps), np.float16),
        frames=np.zeros((shape.frames, 3, shape.frame_size, shape.frame_size), np.uint8),
        has_audio=False,
        has_video=False,
    )


def decode_clip(path: str, shape: ClipShape) -> DecodedClip:
    """Audio and frames of one clip; a stream that is absent is masked; an unreadable file is a UserError."""
    clip = empty_clip(shape)
    try:
        raw = locations.read_bytes(path) if locations.is_uri(path) else None  # an object-store clip, read once
        with av.open(path if raw is None else io.BytesIO(raw)) as container:
            if container.streams.audio:
                waveform = _read_audio(container, shape)
                if waveform.size:
                    clip.mel, clip.has_audio = log_mel(waveform, shape).astype(np.float16), True
        # Opened again: demuxing the video after the audio would need a seek, which some mp4s refuse.
        with av.open(path if raw is None else io.BytesIO(raw)) as container:
            if container.streams.video:
                frames = _read_frames(container, shape)
                if frames is not None:
                    clip.frames, clip.has_video = frames, True
    except (av.FFmpegError, OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable clip ({str(err).splitlines()[0]})") from None
    return clip


def _read_audio(container, shape: ClipShape) -> np.ndarray:
    """Mono float32 at shape.sample_rate, the first audio_seconds (shorter clips stay shorter)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=shape.sample_rate)
    chunks, total = [], 0
    for frame in container.decode(audio=0):
        for resampled in resampler.resample(frame):
            chunks.append(resampled.to_ndarray().reshape(-1))
            total += chunks[-1].size
        if total >= shape.samples:
            break
    else:
        chunks += [r.to_ndarray().reshape(-1) for r in resampler.resample(None)]
    return np.concatenate(chunks)[: shape.samples].astype(np.float32) if chunks else np.zeros(0, np.float32)


def _read_frames(container, shape: ClipShape) -> np.ndarray | None:
    """shape.frames frames evenly spaced over the clip (the last decoded one repeats past its end)."""
    stream = container.streams.video[0]
    duration = float(stream.duration * stream.time_base) if stream.duration else None
    if duration is None and container.duration:
        duration = container.duration / av.time_base
    duration = duration or 1.0
    targets = [(k + 0.5) * duration / shape.frames for k in range(shape.frames)]
    picked: list[np.ndarray] = []
    last = None
    for frame in container.decode(video=0):
        last = frame
        seconds = float(frame.time) if frame.time is not None else 0.0
        while len(picked) < len(targets) and seconds >= targets[len(picked)] - 1e-6:
            picked.append(_square_rgb(frame, shape.frame_size))
        if len(picked) == len(targets):
            break
    if last is None:
        return None
    while len(picked) < len(targets):
        picked.append(_square_rgb(last, shape.frame_size))
    return np.stack(picked)


def _square_rgb(frame, size: int) -> np.ndarray:
    """[3, size, size] uint8: the shorter side scaled to size, then centre-cropped."""
    scale = size / min(frame.width, frame.height)
    width, height = max(size, round(frame.width * scale)), max(size, round(frame.height * scale))
    rgb = frame.to_ndarray(width=width, height=height, format="rgb24")
    top, left = (height - size) // 2, (width - size) // 2
    return rgb[top : top + size, left : left + size].transpose(2, 0, 1).copy()


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters, evenly spaced on the HTK mel scale from 125 Hz (VGGish)."""

    def to_mel(hz):
        return 1127.0 * np.log1p(np.asarray(hz) / 700.0)

    bins_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = np.linspace(to_mel(min(125.0, sample_rate / 8)), to_mel(sample_rate / 2), n_mels + 2)
    bins_mel = to_mel(bins_hz)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins_mel - lower) / (centre - lower)
    falling = (upper - bins_mel) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel(waveform: np.ndarray, shape: ClipShape) -> np.ndarray:
    """[n_mels, mel_steps] log-mel energies of a mono waveform, zero-padded to audio_seconds."""
    padded = np.zeros(shape.samples, np.float32)
    padded[: min(waveform.size, shape.samples)] = waveform[: shape.samples]
    window = max(2, round(shape.sample_rate * WINDOW_SECONDS))
    n_fft = 1 << (window - 1).bit_length()
    centred = np.pad(padded, n_fft // 2, mode="reflect")
    starts = np.arange(shape.mel_steps) * shape.hop
    frames = centred[starts[:, None] + np.arange(n_fft)[None, :]]
    taper = np.zeros(n_fft, np.float32)
    taper[(n_fft - window) // 2 : (n_fft - window) // 2 + window] = np.hanning(window)
    power = np.abs(np.fft.rfft(frames * taper, axis=1)) ** 2
    return np.log(mel_filterbank(shape.sample_rate, n_fft, shape.n_mels) @ power.T + LOG_OFFSET)
