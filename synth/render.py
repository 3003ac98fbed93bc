"""Rendering patches and presets to mono audio with one ``vita.Synth``.

vita resets its voices at the start of every render, but Vital smooths control
changes over roughly 100 ms, so the first render after new values would start
with a glide from the previous preset. Each render is therefore preceded by a
short, discarded warm-up render (``warmup_s``) that lets the smoothers settle;
without it a sample's audio would depend on which sample the same synth
rendered before it.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import vita

from synth.bank import Bank
from synth.base import BASE_NAME, base_preset
from synth.config import require
from synth.preset import Preset, connect_route, route_slot
from synth.scales import VOLUME_OFFSET_DB, volume_db, volume_raw
from synth.space import ParameterSpace, Patch


class RenderError(RuntimeError):
    """vita could not load or render something."""


@dataclass(frozen=True)
class RenderConfig:
    """How a note is rendered and judged. Durations in seconds, levels in linear full scale."""

    sample_rate: int = 44100
    note_dur: float = 1.5
    render_dur: float = 2.0
    velocity: float = 0.8
    warmup_s: float = 0.2
    silence_dbfs: float = -60.0  # a peak below this is "silent"
    clip_level: float = 1.0  # a peak above this is "clipping"
    # a peak less than this many dB above the silence threshold or below the clipping level
    # is judged on a steady render (every oscillator's random phase off) instead, so that
    # the verdict does not hang on the phase
    verdict_margin_db: float = 10.0

    def __post_init__(self):
        require(8000 <= self.sample_rate <= 192000, "sample_rate", self.sample_rate,
                "8000..192000 Hz")
        require(0.0 < self.render_dur <= 30.0, "render_dur", self.render_dur, "0 < s <= 30")
        require(0.0 < self.note_dur <= self.render_dur, "note_dur", self.note_dur,
                f"0 < s <= render_dur ({self.render_dur})")
        require(0.0 <= self.velocity <= 1.0, "velocity", self.velocity, "0..1")
        require(0.0 <= self.warmup_s <= 2.0, "warmup_s", self.warmup_s, "0..2 s")
        require(-160.0 <= self.silence_dbfs < 0.0, "silence_dbfs", self.silence_dbfs,
                "-160..0 dBFS")
        require(self.clip_level > 0.0, "clip_level", self.clip_level, "> 0")
        require(0.0 <= self.verdict_margin_db <= 40.0, "verdict_margin_db",
                self.verdict_margin_db, "0..40 dB (0: judge every render as it comes)")

    @property
    def num_samples(self) -> int:
        return int(round(self.render_dur * self.sample_rate))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RenderResult:
    """One rendered note.

    Attributes:
        audio: mono float32, shape ``(num_samples,)``; the mean of Vital's two channels.
        peak: max absolute sample (linear full scale).
        rms: root mean square over the whole render.
        reason: why the render is unusable (``"non-finite"``, ``"silent"``,
            ``"clipping"``), or ``""`` when it is valid.
        volume_change_db: how far the master volume was turned down to bring the render
            under a peak ceiling (``Renderer.render(..., ceiling_dbfs=)``); 0 when it was not.
    """

    audio: np.ndarray
    peak: float
    rms: float
    reason: str
    volume_change_db: float = 0.0

    @property
    def valid(self) -> bool:
        return not self.reason


def near_threshold(result: RenderResult, config: RenderConfig, *, loud: bool = True) -> bool:
    """Whether the oscillators' random phase could tip ``result``'s verdict: its peak is
    less than ``verdict_margin_db`` above the silence threshold or (``loud``) below the
    clipping level. One-sided, since two oscillators at one pitch can cancel by tens of dB
    at one phase and not at another: a render judged silent may be audible at another
    phase."""
    if not np.isfinite(result.peak) or config.verdict_margin_db <= 0:
        return False
    level = 20.0 * np.log10(max(result.peak, 1e-12))
    return (level < config.silence_dbfs + config.verdict_margin_db
            or loud and level > 20.0 * np.log10(config.clip_level) - config.verdict_margin_db)


def silent(audio: np.ndarray, silence_dbfs: float) -> bool:
    """Whether a render is silent: its peak at or under ``silence_dbfs``. A quiet render
    that is not silent has a level to move, however low its RMS (``model.match``)."""
    return _silent_peak(float(np.max(np.abs(audio), initial=0.0)), silence_dbfs)


def _silent_peak(peak: float, silence_dbfs: float) -> bool:
    return peak <= 10.0 ** (silence_dbfs / 20.0)


def judge(audio: np.ndarray, config: RenderConfig) -> RenderResult:
    """Measure a mono render and say whether it is usable."""
    if not np.all(np.isfinite(audio)):
        return RenderResult(audio, float("nan"), float("nan"), "non-finite")
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    if _silent_peak(peak, config.silence_dbfs):  # the peak measured once
        reason = "silent"
    elif peak > config.clip_level:
        reason = "clipping"
    else:
        reason = ""
    return RenderResult(audio, peak, rms, reason)


class Renderer:
    """Owns one ``vita.Synth``; applies patches on top of base presets and renders notes.

    Not thread-safe: give each thread or actor its own renderer.

    Args:
        space: the parameter space patches come from.
        config: how to render.
        bases: extra base presets (for example perturbation seeds), by ``Preset.name``;
            the synthmatch base preset is always available as ``"synthmatch-base"``.
        banks: the banks of a scope that chooses wavetables or LFO shapes, by settings list
            (``"wavetables"``, ``"lfos"``); default the space's own (harvested tables read
            from the real presets folder). Give ones made by ``Bank.with_tables`` where that
            folder is not mounted.
    """

    def __init__(self, space: ParameterSpace, config: RenderConfig | None = None,
                 bases: Iterable[Preset] = (), banks: dict[str, Bank] | None = None):
        self.space = space
        self.banks = {**space.banks, **(banks or {})}
        self.config = config or RenderConfig()
        self.synth = vita.Synth()
        self.synth.set_sample_rate(self.config.sample_rate)
        self._controls = self.synth.get_controls()
        self._bases: dict[str, tuple[str, dict[str, int]]] = {}
        for preset in (base_preset(), *bases):
            self._bases[preset.name] = self._prepare(preset)
        self._current: tuple | None = None  # (base, bank choices) the synth holds
        self._choice_params = {p.name for p in space.categorical if p.bank}
        self._init_table = (self.banks["wavetables"].index("Init")
                            if "wavetables" in self.banks else -1)

    def _prepare(self, preset: Preset) -> tuple[str, dict[str, int]]:
        """The base's JSON with every route connected, and each route's slot."""
        data = json.loads(preset.to_json())
        slots = {}
        for route in self.space.routes:
            slot = route_slot(data["settings"], route.source, route.destination)
            if slot is None:
                slot = connect_route(data["settings"], route.source, route.destination, preset.name)
                data["settings"][f"modulation_{slot}_amount"] = 0.0
            slots[route.name] = slot
        return json.dumps(data), slots

    @property
    def base_names(self) -> list[str]:
        return list(self._bases)

    def prepared_base(self, name: str = BASE_NAME) -> tuple[str, dict[str, int]]:
        """A base preset's JSON with every route connected, and each route's slot (1-based)."""
        return self._bases[name]

    def _load(self, base: str, choices: dict[tuple[str, int], int] | None = None
              ) -> dict[str, int]:
        """Load ``base`` (with the bank tables ``choices`` names: ``(settings list, slot) ->
        class index``) unless the synth already holds it."""
        if base not in self._bases:
            raise RenderError(f"unknown base preset {base!r}; this renderer has "
                              f"{sorted(self._bases)}")
        text, slots = self._bases[base]
        key = (base, tuple(sorted((choices or {}).items())))
        if key != self._current:
            if choices:
                data = json.loads(text)
                for (name, slot), index in choices.items():
                    data["settings"][name][slot - 1] = self.banks[name].table(index)
                text = json.dumps(data)
            if not self.synth.load_json(text):
                raise RenderError(f"vita could not load base preset {base!r}")
            self._current = key
        return slots

    def apply(self, patch: Patch, base: str = BASE_NAME) -> None:
        """Set the synth to ``base`` with ``patch``'s values (routes as their slot amounts,
        wavetables and LFO shapes loaded from their banks)."""
        raw = self.space.raw_from_patch(patch)
        choices = self.space.choices(patch)
        # An oscillator that is off plays nothing, so it gets Vital's one-frame init table:
        # building a table's 257 frames is most of a load's cost (about 40 ms for one of
        # several keyframes, against 11 ms for a whole base with init tables).
        for (name, slot) in choices:
            if name == "wavetables" and raw.get(f"osc_{slot}_on", 1.0) < 0.5:
                choices[(name, slot)] = self._init_table
        slots = self._load(base, choices)
        for name, value in raw.items():
            if name in self._choice_params:
                continue
            slot = slots.get(name)
            key = f"modulation_{slot}_amount" if slot is not None else name
            self._controls[key].set(value)

    def _note(self, note: int, velocity: float) -> np.ndarray:
        cfg = self.config
        if cfg.warmup_s > 0:
            self.synth.render(0, 0.0, 0.0, cfg.warmup_s)
        stereo = self.synth.render(int(note), float(velocity), cfg.note_dur, cfg.render_dur)
        return stereo.mean(axis=0, dtype=np.float32)[: cfg.num_samples]

    def render_current(self, note: int, velocity: float | None = None, *,
                       ceiling_dbfs: float | None = None) -> RenderResult:
        """Render ``note`` with the synth as it is now (after ``apply`` or a loaded preset).

        Vital starts each oscillator at a random phase, so two renders of one patch differ,
        and a peak near the silence or clipping threshold could be judged either way. The
        verdict of such a render (``near_threshold``) is taken from a second, steady render
        with every oscillator's random phase off, whose peak hardly moves between renders
        (on quiet draws: median spread 0.0 dB, 90th percentile 0.0005 dB, against 0.86 and
        2.9 dB with the phase random: BENCHMARKS.md). The audio returned is the first
        render's, as is.

        With ``ceiling_dbfs``, a render peaking above it is not judged against the clipping
        level: the master volume, a linear gain after every effect, is turned down until the
        peak sits at the ceiling, and the audio with it (``volume_change_db`` says by how
        much; the synth keeps the new volume). That needs no second render; the ceiling must
        leave ``verdict_margin_db`` under the clipping level, so the peak of another phase
        stays under it (BENCHMARKS.md: 99% of loud draws move less than 8.4 dB).
        """
        cfg = self.config
        velocity = cfg.velocity if velocity is None else velocity
        if not 0 <= note <= 127:
            raise RenderError(f"MIDI note {note} is outside 0..127")
        if not 0.0 <= velocity <= 1.0:
            raise RenderError(f"velocity {velocity} is outside 0..1")
        clip_dbfs = 20.0 * np.log10(cfg.clip_level)
        if ceiling_dbfs is not None and ceiling_dbfs > clip_dbfs - cfg.verdict_margin_db:
            raise RenderError(f"a peak ceiling of {ceiling_dbfs} dBFS is less than the verdict "
                              f"margin ({cfg.verdict_margin_db} dB) under the clipping level "
                              f"({clip_dbfs:.1f} dBFS)")
        result = judge(self._note(note, velocity), cfg)
        if ceiling_dbfs is not None:
            result = self._turn_down(result, ceiling_dbfs)
        if near_threshold(result, cfg, loud=ceiling_dbfs is None):
            result = dataclasses.replace(result, reason=self._steady_verdict(note, velocity))
        return result

    def _turn_down(self, result: RenderResult, ceiling_dbfs: float) -> RenderResult:
        """``result`` with its peak brought down to ``ceiling_dbfs`` by the master volume
        (as it is when the peak is under the ceiling, or the volume cannot go lower)."""
        if not np.isfinite(result.peak) or result.peak <= 10.0 ** (ceiling_dbfs / 20.0):
            return result
        change = ceiling_dbfs - 20.0 * float(np.log10(result.peak))
        volume = self._controls["volume"]
        db = volume_db(volume.value()) + change
        if db < -VOLUME_OFFSET_DB:
            return result
        volume.set(volume_raw(db))
        audio = result.audio * np.float32(10.0 ** (change / 20.0))
        return dataclasses.replace(judge(audio, self.config), volume_change_db=change)

    def _steady_verdict(self, note: int, velocity: float) -> str:
        """The verdict of a render with every oscillator's random phase off."""
        phases = [self._controls[f"osc_{i}_random_phase"] for i in (1, 2, 3)]
        kept = [c.value() for c in phases]
        for c in phases:
            c.set(0.0)
        try:
            return judge(self._note(note, velocity), self.config).reason
        finally:
            for c, value in zip(phases, kept, strict=True):
                c.set(value)

    def render(self, patch: Patch, note: int, *, base: str = BASE_NAME,
               velocity: float | None = None, ceiling_dbfs: float | None = None) -> RenderResult:
        """Render ``patch`` applied on ``base`` at MIDI ``note``; with ``ceiling_dbfs``, a
        louder render is turned down to it (:meth:`render_current`; apply
        ``volume_change_db`` to the patch with :meth:`ParameterSpace.with_volume_change`)."""
        self.apply(patch, base)
        return self.render_current(note, velocity, ceiling_dbfs=ceiling_dbfs)

    def render_preset(self, preset: Preset, note: int, *,
                      velocity: float | None = None) -> RenderResult:
        """Render a whole preset as it is."""
        if not self.synth.load_json(preset.to_json()):
            raise RenderError(f"vita could not load preset {preset.name!r} (malformed, or "
                              "made by a newer Vital)")
        self._current = None
        return self.render_current(note, velocity)


class RenderPool:
    """Threads with one :class:`Renderer` each (made on first use): vita releases the GIL,
    so they render in parallel."""

    def __init__(self, space: ParameterSpace, config: RenderConfig | None = None,
                 threads: int = 1):
        self.space, self.config = space, config or RenderConfig()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="render")

    def _renderer(self) -> Renderer:
        renderer = getattr(self._local, "renderer", None)
        if renderer is None:
            renderer = self._local.renderer = Renderer(self.space, self.config)
        return renderer

    def map(self, fn: Callable[[Renderer, object], object], items: Iterable) -> list:
        """``fn(renderer, item)`` for each item, on this pool's threads; results in order."""
        return list(self._pool.map(lambda item: fn(self._renderer(), item), items))

    def close(self) -> None:
        self._pool.shutdown(wait=False)
