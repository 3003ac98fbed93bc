"""Effects on the training audio: chorus, echo and reverb, drawn per clip, on the device.

Real presets almost always run their sound through effects (20 of the 30 in
../shared/real-presets use the reverb, 17 the chorus, 15 the delay), while the
training renders have none: the parameters learned live before the effects. So
that the network learns to read those parameters through an effect rather than
be thrown by one, each training clip may pass through approximations of Vital's
three most used effects; its targets (the parameters) stay the same, and so does its
level (the RMS of the dry clip), which the volume parameter sets.

    chorus: 2 voices, each a copy delayed by 7-20 ms +- 1-4 ms at 0.2-2 Hz
    echo:   taps every 80-500 ms, each 0.2-0.6 times the last
    reverb: exponentially decaying noise (RT60 0.3-3 s, 0-40 ms pre-delay), low-passed

Each is applied with its own probability and a wet mix drawn from its range;
echo and reverb mix at equal power (their wet is uncorrelated with the dry). Echo and
reverb are linear and time-invariant: a clip gets one impulse response (under a
second long) from a bank drawn once, applied by FFT convolution. The chorus is a
modulated delay read by linear interpolation. Everything runs in torch on the
batch's device; the draws come from a seeded ``torch.Generator``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from synth.config import require


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (0 turns an effect off) and wet-mix ranges. All off by default."""

    chorus: float = 0.0
    echo: float = 0.0
    reverb: float = 0.0
    chorus_mix: tuple[float, float] = (0.2, 0.5)
    echo_mix: tuple[float, float] = (0.1, 0.4)
    reverb_mix: tuple[float, float] = (0.1, 0.5)
    reverb_rt60: tuple[float, float] = (0.3, 3.0)  # seconds to decay by 60 dB
    bank: int = 128  # impulse responses drawn per effect combination

    def __post_init__(self):
        for name in ("chorus", "echo", "reverb"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, name, value, "a probability, 0..1")
        for name in ("chorus_mix", "echo_mix", "reverb_mix", "reverb_rt60"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            lo, hi, top = (0.05, 20.0, "0.05..20 s") if name == "reverb_rt60" else (0, 1, "0..1")
            require(len(value) == 2 and lo <= value[0] <= value[1] <= hi, name, value,
                    f"[low, high] within {top}")
        require(1 <= self.bank <= 4096, "bank", self.bank, "1..4096")

    @property
    def enabled(self) -> bool:
        return max(self.chorus, self.echo, self.reverb) > 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Augment:
    """``augment(audio)``: mono clips ``(B, N)`` -> the same shape, with effects drawn per
    clip. Deterministic for a given ``seed`` and sequence of batch shapes."""

    def __init__(self, config: AugmentConfig, sample_rate: int, seed: int = 0):
        self.config, self.sr = config, sample_rate
        self.generator = torch.Generator().manual_seed(seed)
        self._banks: dict = {}  # (n, device) -> {(echo, reverb): (bank, size) spectra}

    def _uniform(self, n: int, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=self.generator, dtype=torch.float64)

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if not cfg.enabled:
            return audio
        b = audio.shape[0]
        probs = torch.tensor([[cfg.chorus], [cfg.echo], [cfg.reverb]])
        chorus, echo, reverb = torch.rand(3, b, generator=self.generator) < probs
        x = audio.float()
        if chorus.any():
            rows = torch.nonzero(chorus).flatten().to(x.device)
            x = x.index_copy(0, rows, self._chorus(x[rows]))
        for kind in ((True, False), (False, True), (True, True)):
            hit = (echo == kind[0]) & (reverb == kind[1])
            if hit.any():
                rows = torch.nonzero(hit).flatten().to(x.device)
                x = x.index_copy(0, rows, self._convolve(x[rows], kind))
        # the dry clip's level: a tone on a peak of a reverb's response can come out louder
        dry, wet = (audio.float().square().mean(1).sqrt(), x.square().mean(1).sqrt())
        x = x * (dry / wet.clamp(min=1e-9)).clamp(max=10.0)[:, None]
        return x.to(audio.dtype)

    def _chorus(self, x: torch.Tensor) -> torch.Tensor:
        """Two modulated delay lines, mixed with the dry signal."""
        (b, n), sr, dev = x.shape, self.sr, x.device
        t = torch.arange(n, device=dev, dtype=torch.float32)[None] / sr

        def draw(lo, hi):
            return self._uniform(b, lo, hi).float().to(dev)[:, None]

        mix = draw(*self.config.chorus_mix)
        wet = torch.zeros_like(x)
        for _ in range(2):
            base, depth = draw(0.007, 0.020), draw(0.001, 0.004)
            rate, phase = draw(0.2, 2.0), draw(0.0, 2 * math.pi)
            pos = (t - base - depth * torch.sin(2 * math.pi * rate * t + phase)) * sr
            lo = pos.floor()
            frac = pos - lo
            i0 = lo.long().clamp(0, n - 1)
            i1 = (i0 + 1).clamp(0, n - 1)
            wet += (pos >= 0).float() * ((1 - frac) * x.gather(1, i0) + frac * x.gather(1, i1))
        return (1 - mix) * x + mix * wet / math.sqrt(2)

    def _impulse(self, n: int, echo: bool, reverb: bool) -> torch.Tensor:
        """One impulse response (length ``n``, float64): dry plus echo, then reverb."""
        cfg, sr = self.config, self.sr
        h = torch.zeros(n, dtype=torch.float64)
        h[0] = 1.0
        if echo:
            mix = float(self._uniform(1, *cfg.echo_mix))
            period = int(float(self._uniform(1, 0.08, 0.5)) * sr)
            feedback = float(self._uniform(1, 0.2, 0.6))
            taps = torch.arange(period, n, period)
            gains = feedback ** torch.arange(len(taps), dtype=torch.float64)
            h[0] = math.sqrt(1.0 - mix)  # equal power: the dry and the wet are uncorrelated
            h[taps] = math.sqrt(mix) * gains / gains.norm().clamp(min=1e-12)
        if reverb:
            mix = float(self._uniform(1, *cfg.reverb_mix))
            rt60 = float(self._uniform(1, *cfg.reverb_rt60))
            predelay = int(float(self._uniform(1, 0.0, 0.04)) * sr)
            cutoff = float(self._uniform(1, 2000.0, 12000.0))
            length = n - predelay
            t = torch.arange(length, dtype=torch.float64) / sr
            tail = torch.randn(length, generator=self.generator, dtype=torch.float64)
            tail = tail * torch.exp(-math.log(1000.0) * t / rt60)  # -60 dB at rt60
            f = torch.fft.rfftfreq(length, 1 / sr, dtype=torch.float64)
            tail = torch.fft.irfft(torch.fft.rfft(tail) / torch.sqrt(1 + (f / cutoff) ** 2),
                                   length)
            r = torch.zeros(n, dtype=torch.float64)
            r[predelay:] = math.sqrt(mix) * tail / tail.norm().clamp(min=1e-12)
            r[0] += math.sqrt(1.0 - mix)
            size = 1 << (2 * n - 1).bit_length()
            h = torch.fft.irfft(torch.fft.rfft(h, size) * torch.fft.rfft(r, size), size)[:n]
        return h

    def _convolve(self, x: torch.Tensor, kind: tuple[bool, bool]) -> torch.Tensor:
        """Each row convolved with an impulse response of kind (echo, reverb) from the bank."""
        n = x.shape[1]
        ir_len = min(n, int(0.95 * self.sr))  # under a second: 2 s clips take FFTs of 2^17
        size = 1 << (n + ir_len - 1).bit_length()
        key = (n, str(x.device), kind)
        if key not in self._banks:
            irs = torch.stack([self._impulse(ir_len, *kind) for _ in range(self.config.bank)])
            self._banks[key] = torch.fft.rfft(irs.float(), size).to(x.device)
        bank = self._banks[key]
        pick = torch.randint(len(bank), (x.shape[0],), generator=self.generator).to(x.device)
        return torch.fft.irfft(torch.fft.rfft(x, size) * bank[pick], size)[:, :n]
