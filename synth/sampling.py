"""Sampling patches: each one a pure function of ``(seed, index)``.

The random generator for sample ``index`` is seeded by ``(stream, seed, index)``
alone, so a sample is the same whatever the batching, worker count or machine.

Two strategies, mixed by ``perturb_fraction``:

- ``uniform``: every parameter drawn over its range, then narrowed by the
  audibility rules below, so that almost no sample is silent or clipping by
  construction (rather than rendering and rejecting);
- ``perturb``: a seed preset (for example one of ../shared/real-presets)
  imported into the scope, its unit values moved by Gaussian noise and some of
  its discrete values redrawn; the seed preset is the base it is applied to,
  so its wavetables and effects come along.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from synth.base import BASE_NAME
from synth.config import require
from synth.preset import Preset, import_preset, load_preset
from synth.prior import smoothed, studio_prior
from synth.scales import volume_raw
from synth.space import ParameterSpace, Patch, get_space

_STREAM = 0x5EED  # separates sampling draws from any other use of (seed, index)


@dataclass(frozen=True)
class SamplerConfig:
    """How patches are drawn. Notes are MIDI numbers; fractions are probabilities."""

    scope: str = "core"
    seed: int = 0
    note_min: int = 36
    note_max: int = 84
    velocity: float = 0.8
    perturb_fraction: float = 0.0
    seed_presets: tuple[str, ...] = ()
    perturb_sigma: float = 0.08  # std of the noise added to unit values
    perturb_redraw: float = 0.1  # probability that a discrete value is redrawn

    def __post_init__(self):
        object.__setattr__(self, "seed_presets", tuple(str(p) for p in self.seed_presets))
        require(self.seed >= 0, "seed", self.seed, "a whole number >= 0")
        require(0 <= self.note_min <= self.note_max <= 127, "note_min..note_max",
                (self.note_min, self.note_max), "0 <= note_min <= note_max <= 127")
        require(0.0 < self.velocity <= 1.0, "velocity", self.velocity, "0 < v <= 1")
        require(0.0 <= self.perturb_fraction <= 1.0, "perturb_fraction",
                self.perturb_fraction, "0..1")
        require(self.perturb_fraction == 0.0 or bool(self.seed_presets), "perturb_fraction",
                self.perturb_fraction, "0 when no seed_presets are given")
        require(0.0 <= self.perturb_sigma <= 1.0, "perturb_sigma", self.perturb_sigma, "0..1")
        require(0.0 <= self.perturb_redraw <= 1.0, "perturb_redraw", self.perturb_redraw, "0..1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Sample:
    """One sampled preset: a patch, the base it applies to, and the note to play."""

    index: int
    patch: Patch
    note: int
    velocity: float
    base: str
    strategy: str  # "uniform" or "perturb"


# --- audibility rules for uniform sampling ----------------------------------------
# Each rule narrows the draw of a few parameters that exist in the scope.
# ``v`` holds raw values by name; ``pitch`` is the played note.

Rule = Callable[[dict, np.random.Generator, int, ParameterSpace], None]


def _has(space: ParameterSpace, *names: str) -> bool:
    return all(n in space.index for n in names)


_STRIPPING_MORPHS = (1.0, 5.0, 6.0, 8.0)
_SINE_ERASING = (*_STRIPPING_MORPHS, 2.0)
_SINE_SAFE_MORPHS = (0.0, 3.0, 4.0, 7.0, 9.0, 10.0, 11.0)


def _oscillators(v: dict, rng: np.random.Generator, pitch: int, space: ParameterSpace) -> None:
    """At least one oscillator on, at an audible level, in a musical, audible register.

    Ring modulation by another source (types 10-12) silences an oscillator whose
    partner is off, and FM from the sample (9) needs the sample oscillator, so
    uniform draws leave them out; perturbed real presets still reach them. The
    same goes for destinations 5-13, which feed one effect directly and are
    silent while it is off: uniform draws use filter 1, filter 2, both, the
    effects chain or the direct output (0-4). Spectral morphs that strip
    harmonics (vocode 1, smear 5, random amplitudes 6, high pass 8) can erase a
    frame with few harmonics (the sine end of basic shapes), so their amount
    stays at or under one half; where the oscillator chooses its wavetable
    (``studio``), one whose frame is sine-like (the bank's harmonic counts) gets
    another morph instead, since any amount of those, or of formant scale (2), can
    erase a sine (BENCHMARKS.md, "silent studio draws").
    """
    oscs = [n for n in (1, 2, 3) if _has(space, f"osc_{n}_on")]
    if not oscs:
        return
    on = {n: rng.random() < (0.85 if n == 1 else 0.5 if n == 2 else 0.25) for n in oscs}
    if not any(on.values()):
        on[oscs[int(rng.integers(len(oscs)))]] = True
    for n in oscs:
        p = f"osc_{n}_"
        v[p + "on"] = float(on[n])
        v[p + "level"] = rng.uniform(0.35, 1.0)  # amplitude = level^2: -18 .. 0 dB
        shifts = [t for t in (-24, -12, -12, 0, 0, 0, 0, 7, 12, 12, 19, 24)
                  if 24 <= pitch + t <= 96]
        v[p + "transpose"] = float(shifts[int(rng.integers(len(shifts)))])
        v[p + "midi_track"] = float(rng.random() < 0.95)
        v[p + "distortion_type"] = float(rng.integers(0, 9))
        v[p + "destination"] = float(rng.integers(0, 5))
        if _has(space, p + "wavetable") and v.get(p + "spectral_morph_type") in _SINE_ERASING \
                and space.banks["wavetables"].sine_like(int(v[p + "wavetable"]),
                                                        v[p + "wave_frame"]):
            v[p + "spectral_morph_type"] = float(rng.choice(_SINE_SAFE_MORPHS))
        if v.get(p + "spectral_morph_type") in _STRIPPING_MORPHS:
            v[p + "spectral_morph_amount"] = rng.uniform(0.0, 0.5)


def _filters(v: dict, rng: np.random.Generator, pitch: int, space: ParameterSpace) -> None:
    """A filter leaves the note's fundamental region audible.

    Blend runs low-pass (0) .. band-pass (1) .. high-pass (2). A low-pass
    cutoff stays above the note minus an octave; a high-pass one below it plus
    three octaves. Drive stays under 12 dB: beyond, the filter clips.
    """
    for n in (1, 2):
        p = f"filter_{n}_"
        if not _has(space, p + "cutoff", p + "blend"):
            continue
        v[p + "cutoff"] = _cutoff(rng, pitch, high_pass=v[p + "blend"] >= 1.0)
        v[p + "drive"] = rng.uniform(0.0, 12.0)


def _cutoff(rng: np.random.Generator, pitch: int, *, high_pass: bool) -> float:
    """A cutoff (semitones, 8..136) that leaves ``pitch`` audible: a low pass's above the
    note minus an octave, a high pass's below it plus three octaves."""
    if high_pass:
        return rng.uniform(8.0, min(136.0, pitch + 36.0))
    return rng.uniform(max(8.0, pitch - 12.0), 136.0)


def _eq(v: dict, rng: np.random.Generator, pitch: int, space: ParameterSpace) -> None:
    """The EQ's cut modes leave the note audible, by the filters' rule (:func:`_cutoff`):
    its low band as a high pass (low mode 1), its high band as a low pass (high mode 1),
    and with both the low pass sits above the high pass. Drawn over the whole range, the
    two crossed and silenced one EQ'd studio draw in thirty (BENCHMARKS.md, "silent studio
    draws")."""
    if not _has(space, "eq_low_mode", "eq_low_cutoff", "eq_high_mode", "eq_high_cutoff"):
        return
    high_pass, low_pass = v["eq_low_mode"] == 1.0, v["eq_high_mode"] == 1.0
    if high_pass:
        v["eq_low_cutoff"] = _cutoff(rng, pitch, high_pass=True)
    if low_pass:
        v["eq_high_cutoff"] = _cutoff(rng, pitch, high_pass=False)
    if high_pass and low_pass and v["eq_high_cutoff"] < v["eq_low_cutoff"]:
        v["eq_low_cutoff"], v["eq_high_cutoff"] = v["eq_high_cutoff"], v["eq_low_cutoff"]


def _amp_envelope(v: dict, rng: np.random.Generator, pitch: int, space: ParameterSpace) -> None:
    """The amplitude envelope (envelope 1) opens within the note.

    Times are stored as the fourth root of seconds: delay <= 0.13 s and
    attack <= 0.66 s of the 1.5 s note.
    """
    if _has(space, "env_1_attack", "env_1_delay"):
        v["env_1_delay"] = rng.uniform(0.0, 0.6)
        v["env_1_attack"] = rng.uniform(0.0, 0.9)


def _routes(v: dict, rng: np.random.Generator, pitch: int, space: ParameterSpace) -> None:
    """Route amounts within +-0.5: a full-depth envelope sweep shuts the filter. In a scope
    drawn at real presets' rates, each route is used (amount not 0) as often as real
    presets use it."""
    rates = _route_rates() if space.scope.real_rates else None
    unseen = smoothed(0.0, studio_prior()["presets"]) if rates else 0.0  # a route never counted
    for route in space.routes:
        # (core draws no coin: its samples stay what they were before studio existed)
        used = rates is None or rng.random() < rates.get((route.source, route.destination), unseen)
        v[route.name] = rng.uniform(-0.5, 0.5) if used else 0.0


def _effects(v: dict, rng: np.random.Generator, pitch: int, space: ParameterSpace) -> None:
    """Each effect on as often as real presets turn it on (reverb two times in three,
    the flanger about one in thirty); LFOs and effects run free in seconds, not synced to a
    tempo (the tempo is the host's; importing converts a synced rate likewise)."""
    if not space.scope.real_rates:
        return
    prior = studio_prior()
    for effect, rate in prior["effects_on"].items():
        if f"{effect}_on" in space.index:
            v[f"{effect}_on"] = float(rng.random() < smoothed(rate, prior["presets"]))
    for name in space.index:
        if name.endswith("_sync") and f"{name[:-5]}_frequency" in space.index:
            v[name] = 0.0  # "Seconds": LFOs, chorus, delay, flanger and phaser run free


@functools.cache
def _route_rates() -> dict[tuple[str, str], float]:
    """Each route's rate of use in real presets, smoothed: every counted route, not only the
    vocabulary's (studio adds core's routes to it). A route never counted is not in it."""
    prior = studio_prior()
    n = prior["presets"]
    return {(r["source"], r["destination"]): smoothed(r["presets"] / n, n)
            for r in prior["routes"]}


def _volume(v: dict, rng: np.random.Generator, pitch: int, space: ParameterSpace) -> None:
    """Master volume leaves headroom for the oscillators that are on.

    Volume is shown as sqrt(raw) - 80 dB. Each oscillator's amplitude is its
    level squared; the master sits 2-12 dB (studio: 5-14 dB) under full scale minus the
    summed oscillator gain, so a loud stack is turned down rather than clipped.
    """
    if not _has(space, "volume"):
        return
    amp = sum(v.get(f"osc_{n}_level", 0.0) ** 2 * v.get(f"osc_{n}_on", 0.0) for n in (1, 2, 3))
    gain_db = 20.0 * math.log10(max(amp, 1e-3))
    # effects (EQ boosts, delay feedback, chorus voices) lift peaks: studio leaves 3 dB
    # more headroom at the top and 2 dB at the bottom (BENCHMARKS.md, "studio draws")
    lo, hi = (-14.0, -5.0) if space.scope.real_rates else (-12.0, -2.0)
    db = rng.uniform(lo, hi) - max(gain_db, 0.0)
    v["volume"] = volume_raw(db)


AUDIBILITY_RULES: tuple[Rule, ...] = (_oscillators, _filters, _eq, _amp_envelope, _routes,
                                      _effects, _volume)


class Sampler:
    """Draws :class:`Sample` objects; ``sample(i)`` depends only on the config and ``i``."""

    def __init__(self, config: SamplerConfig | None = None,
                 seed_presets: list[Preset] | None = None):
        """``seed_presets``, when given, are the already loaded ``config.seed_presets``
        (for workers that cannot see the driver's files)."""
        self.config = config or SamplerConfig()
        self.space = get_space(self.config.scope)
        if seed_presets is None:
            seed_presets = [load_preset(p) for p in self.config.seed_presets]
        if len(seed_presets) != len(self.config.seed_presets):
            raise ValueError(f"{len(seed_presets)} seed presets given for "
                             f"{len(self.config.seed_presets)} paths in the config")
        self.seed_presets: list[Preset] = list(seed_presets)
        names = [p.name for p in self.seed_presets]
        if len(set(names)) != len(names) or BASE_NAME in names:
            raise ValueError(f"seed preset names must be unique and not {BASE_NAME!r}: {names}")
        self._seed_patches = [import_preset(p, self.space) for p in self.seed_presets]

    def _rng(self, index: int, attempt: int) -> np.random.Generator:
        if index < 0 or attempt < 0:
            raise ValueError(f"sample index {index} and attempt {attempt} must be >= 0")
        key = [_STREAM, self.config.seed, index] + ([attempt] if attempt else [])
        return np.random.default_rng(key)

    def sample(self, index: int, attempt: int = 0) -> Sample:
        """Sample ``index``; ``attempt`` > 0 draws its deterministic replacements."""
        cfg = self.config
        rng = self._rng(index, attempt)
        note = int(rng.integers(cfg.note_min, cfg.note_max + 1))
        if rng.random() < cfg.perturb_fraction:
            k = int(rng.integers(len(self.seed_presets)))
            patch = self._perturb(self._seed_patches[k], rng)
            return Sample(index, patch, note, cfg.velocity, self.seed_presets[k].name, "perturb")
        return Sample(index, self._uniform(rng, note), note, cfg.velocity, BASE_NAME, "uniform")

    def samples(self, indices: Iterable[int]) -> list[Sample]:
        return [self.sample(int(i)) for i in indices]

    def _uniform(self, rng: np.random.Generator, note: int) -> Patch:
        space = self.space
        unit = rng.random(len(space.continuous))
        classes = rng.integers(0, space.num_classes)
        values = space.raw_from_patch(Patch(unit, classes))
        for rule in AUDIBILITY_RULES:
            rule(values, rng, note, space)
        return space.patch_from_raw(values, where="uniform sample")

    def _perturb(self, seed: Patch, rng: np.random.Generator) -> Patch:
        cfg = self.config
        unit = seed.continuous + rng.normal(0.0, cfg.perturb_sigma, seed.continuous.shape)
        redraw = rng.random(seed.categorical.shape) < cfg.perturb_redraw
        fresh = rng.integers(0, self.space.num_classes)
        return Patch(np.clip(unit, 0.0, 1.0), np.where(redraw, fresh, seed.categorical))
