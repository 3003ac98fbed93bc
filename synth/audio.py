"""Audio helpers: atomic WAV writing and a log-mel distance between two renders."""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from synth.files import atomic_path


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> Path:
    """Write mono float audio as 24-bit PCM WAV, atomically (temporary file + rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        sf.write(tmp, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_24", format="WAV")
    return path


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono float audio -> 16-bit PCM WAV bytes (what every browser and DAW plays)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def encode_flac(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono float audio -> 16-bit FLAC bytes (lossless for 16-bit PCM, about 40% of it)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_flac(data: bytes, dtype: str = "float32") -> tuple[np.ndarray, int]:
    """FLAC bytes -> (mono audio, sample rate). ``dtype="int16"`` gives the stored PCM
    exactly, in half the memory; ``pcm / 32768`` is the float32 decoding."""
    audio, sample_rate = sf.read(io.BytesIO(data), dtype=dtype, always_2d=False)
    return audio, sample_rate


@functools.cache
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    import librosa  # slow to import; only needed here

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).astype(np.float32)


def log_mel(audio: np.ndarray, sample_rate: int, n_fft: int = 2048, hop: int = 512,
            n_mels: int = 128, eps: float = 1e-5) -> np.ndarray:
    """Log-mel spectrogram ``(n_mels, frames)`` of mono ``audio`` (natural log of power)."""
    audio = np.asarray(audio, dtype=np.float32)
    pad = np.pad(audio, n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(pad, n_fft)[::hop]
    spec = np.abs(np.fft.rfft(frames * np.hanning(n_fft).astype(np.float32), axis=1)) ** 2
    return np.log(_mel_basis(sample_rate, n_fft, n_mels) @ spec.T + eps)


def log_mel_distance(a: np.ndarray, b: np.ndarray, sample_rate: int) -> float:
    """Mean absolute difference of two renders' log-mel spectrograms (same length)."""
    n = min(len(a), len(b))
    return float(np.mean(np.abs(log_mel(a[:n], sample_rate) - log_mel(b[:n], sample_rate))))
