"""Reading a user's clip: any of WAV, FLAC, OGG or MP3, checked and made model-ready.

    read -> check (length, channels, rate, finite) -> mono -> resample -> trim leading
    silence -> check not silent -> crop or pad to the model's window -> normalise loudness

Every problem is an :class:`AudioInputError` whose message names the clip and the problem.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from model.level import active_rms_dbfs
from synth.config import require

FORMATS = "WAV, FLAC, OGG or MP3"


class AudioInputError(ValueError):
    def __init__(self, source: str, problem: str):
        super().__init__(f"{source}: {problem}")
        self.source, self.problem = source, problem


def sniff_format(head: bytes) -> str | None:
    """The container a file's first bytes announce ("wav", "flac", "ogg", "mp3"), or None.

    Lets a server tell "not an audio file at all" (wrong type) from "an audio file
    that does not decode" (corrupt) before decoding.
    """
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


@dataclass(frozen=True)
class InputConfig:
    max_seconds: float = 30.0
    max_channels: int = 8
    min_sample_rate: int = 8000
    max_sample_rate: int = 192000
    silence_dbfs: float = -60.0  # a clip whose peak is at or under this is silent
    trim_db: float = 40.0  # leading audio more than this under the peak is cut
    # Loudness the clip is normalised to (peak kept <= 0.99): the median RMS of the
    # default training renders (-35 dBFS over the 2 s window), so that the level the
    # network sees, and the volume it predicts, are in the range it learned.
    target_rms_dbfs: float = -35.0

    def __post_init__(self):
        require(0 < self.max_seconds <= 600, "max_seconds", self.max_seconds, "0 < s <= 600")
        require(self.max_channels >= 1, "max_channels", self.max_channels, ">= 1")
        require(-120 <= self.silence_dbfs < 0, "silence_dbfs", self.silence_dbfs, "-120..0")
        require(-60 <= self.target_rms_dbfs < 0, "target_rms_dbfs", self.target_rms_dbfs,
                "-60..0")


@dataclass
class Clip:
    """A model-ready clip: mono float32 ``(num_samples,)`` at the model's rate."""

    audio: np.ndarray
    source: str
    sample_rate: int
    original_sample_rate: int
    channels: int
    seconds: float  # duration of the file
    gain_db: float  # applied by loudness normalisation


def _db(x: float) -> float:
    return 20.0 * np.log10(max(x, 1e-12))


def load_clip(source: str | os.PathLike | bytes, sample_rate: int, num_samples: int,
              config: InputConfig | None = None, name: str | None = None) -> Clip:
    """Read and prepare a clip from a path or from the file's bytes."""
    cfg = config or InputConfig()
    label = name or (str(source) if not isinstance(source, bytes) else "upload")
    if isinstance(source, bytes):
        if not source:
            raise AudioInputError(label, "the upload is empty")
        handle = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise AudioInputError(label, "no such file")
        if path.stat().st_size == 0:
            raise AudioInputError(label, "the file is empty")
        handle = path
    try:
        info = sf.info(handle)
        if isinstance(handle, io.BytesIO):
            handle.seek(0)
        if info.frames == 0 or info.duration == 0:
            raise AudioInputError(label, "contains no audio")
        if info.duration > cfg.max_seconds:
            raise AudioInputError(label, f"is {info.duration:.1f} s long; the limit is "
                                         f"{cfg.max_seconds:g} s (one note is enough)")
        if not 1 <= info.channels <= cfg.max_channels:
            raise AudioInputError(label, f"has {info.channels} channels; 1 to "
                                         f"{cfg.max_channels} are accepted")
        if not cfg.min_sample_rate <= info.samplerate <= cfg.max_sample_rate:
            raise AudioInputError(label, f"has a sample rate of {info.samplerate} Hz; "
                                         f"{cfg.min_sample_rate}..{cfg.max_sample_rate} Hz "
                                         "are accepted")
        data, sr = sf.read(handle, dtype="float32", always_2d=True)
    except AudioInputError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        detail = re.sub(r"^Error opening .*?: ", "", str(exc).splitlines()[0])[:120]
        raise AudioInputError(label, f"not a readable audio file ({FORMATS}): {detail}") \
            from None
    if data.size == 0:
        raise AudioInputError(label, "contains no audio")
    if not np.all(np.isfinite(data)):
        raise AudioInputError(label, "contains NaN or infinite samples")
    mono = data.mean(axis=1)
    if sr != sample_rate:
        import librosa

        mono = librosa.resample(mono, orig_sr=sr, target_sr=sample_rate).astype(np.float32)
    peak = float(np.max(np.abs(mono)))
    if _db(peak) <= cfg.silence_dbfs:
        raise AudioInputError(label, f"is silent (peak {_db(peak):.0f} dBFS, the threshold is "
                                     f"{cfg.silence_dbfs:g} dBFS)")
    audio, gain_db = prepare_audio(mono, num_samples, cfg)
    return Clip(audio, label, sample_rate, sr, info.channels, float(info.duration), gain_db)


def trim_onset(mono: np.ndarray, num_samples: int, config: InputConfig | None = None
               ) -> np.ndarray:
    """``mono`` from its onset (the first sample within ``trim_db`` of the peak), cropped or
    zero-padded to ``num_samples``; the level is left as it is."""
    cfg = config or InputConfig()
    mono = np.asarray(mono, dtype=np.float32)
    peak = float(np.max(np.abs(mono), initial=0.0))
    start = int(np.argmax(np.abs(mono) > peak * 10 ** (-cfg.trim_db / 20)))
    mono = mono[start:start + num_samples]
    return np.pad(mono, (0, num_samples - len(mono)))


def prepare_audio(mono: np.ndarray, num_samples: int, config: InputConfig | None = None
                  ) -> tuple[np.ndarray, float]:
    """Mono audio at the model's rate -> what the network reads, and the gain applied (dB).

    Leading audio more than ``trim_db`` under the peak is cut, the rest cropped or
    zero-padded to ``num_samples`` and brought to ``target_rms_dbfs`` (peak kept <= 0.99).
    Every clip goes through this, and so does every library entry (``model.library``), so
    that both are compared as the same kind of sound."""
    cfg = config or InputConfig()
    mono = trim_onset(mono, num_samples, cfg)
    gain = 10 ** ((cfg.target_rms_dbfs - active_rms_dbfs(mono)) / 20)
    gain = min(gain, 0.99 / max(float(np.max(np.abs(mono))), 1e-9))
    return (mono * gain).astype(np.float32), _db(gain)
