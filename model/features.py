"""Log-mel spectrograms with ``torch.stft`` and a librosa mel filterbank, on any device."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from synth.config import require
from synth.render import RenderConfig


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel front end. Stored in every checkpoint."""

    sample_rate: int = 44100
    duration_s: float = 2.0  # clips are cropped or zero-padded to this
    n_fft: int = 2048
    hop: int = 512
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float | None = None  # default: sample_rate / 2
    log_eps: float = 1e-6
    # A fixed affine on the log power: no per-clip normalisation, so loudness
    # (the volume parameter) stays visible to the network.
    offset: float = 6.0
    scale: float = 0.25

    def __post_init__(self):
        require(8000 <= self.sample_rate <= 192000, "sample_rate", self.sample_rate,
                "8000..192000")
        require(0.1 <= self.duration_s <= 30.0, "duration_s", self.duration_s, "0.1..30 s")
        require(self.n_fft >= 64 and self.n_fft & (self.n_fft - 1) == 0, "n_fft", self.n_fft,
                "a power of two >= 64")
        require(1 <= self.hop <= self.n_fft, "hop", self.hop, f"1..n_fft ({self.n_fft})")
        require(8 <= self.n_mels <= 512, "n_mels", self.n_mels, "8..512")

    @property
    def num_samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate))

    @property
    def num_frames(self) -> int:
        return self.num_samples // self.hop + 1

    def render_config(self) -> RenderConfig:
        """How to render notes these features are made from: the window, at this rate, with
        the note held for three quarters of it (the training renders' 1.5 s of 2 s)."""
        return RenderConfig(sample_rate=self.sample_rate, render_dur=self.duration_s,
                            note_dur=round(self.duration_s * 0.75, 3))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class LogMel(nn.Module):
    """Audio ``(B, N)`` float -> features ``(B, 1, n_mels, frames)``."""

    def __init__(self, config: FeatureConfig):
        super().__init__()
        import librosa

        self.config = config
        mel = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft,
                                  n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax)
        self.register_buffer("mel", torch.from_numpy(mel.astype(np.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)

    def fit_length(self, audio: torch.Tensor) -> torch.Tensor:
        n = self.config.num_samples
        if audio.shape[-1] >= n:
            return audio[..., :n]
        return nn.functional.pad(audio, (0, n - audio.shape[-1]))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        audio = self.fit_length(audio.float())
        spec = torch.stft(audio, cfg.n_fft, cfg.hop, window=self.window, center=True,
                          return_complex=True)
        power = spec.real.square() + spec.imag.square()  # (B, F, T)
        logmel = torch.log(torch.matmul(self.mel, power) + cfg.log_eps)
        return ((logmel + cfg.offset) * cfg.scale).unsqueeze(1)
