"""Our choices on top of Vital's controls: what is never learned, and the named scopes.

A *scope* is the subset of the sound a model learns. Everything outside it
stays as it is in the base preset the vector is applied to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from synth.controls import Control
from synth.prior import EFFECTS, studio_prior

# Each rule: (regex on the control name, why it is never learned).
NEVER_LEARNED: tuple[tuple[str, str], ...] = (
    (r"^modulation_\d+_",
     "modulation-slot mechanics (320 controls): which source drives which destination is "
     "structure, not a knob; the routes we learn are fixed and learned as amounts"),
    (r"(^|_)view_", "view-only: changes what the editor shows, not the sound"),
    (r"^bypass$", "plugin bypass"),
    (r"^(mod_wheel|pitch_wheel|pitch_bend_range|mpe_enabled|legato|polyphony|voice_override"
     r"|voice_priority|velocity_track)$",
     "performance control: set by the player, and a one-note clip at a fixed velocity "
     "carries no information about it"),
    (r"^portamento_", "portamento acts only between notes; a one-note clip carries none"),
    (r"^(voice_transpose|voice_tune)$",
     "global tuning duplicates the note and each oscillator's transpose and tune"),
    (r"^voice_amplitude$", "a modulation target for the voice level, not a panel knob"),
    (r"^macro_control_\d+$", "macros act only through modulation routes, which are fixed"),
    (r"^beats_per_minute$", "tempo comes from the host, not the preset's sound"),
    (r"^oversampling$", "a quality setting: changes CPU cost, not the intended sound"),
    (r"^effect_chain_order$",
     "an index over 9! effect orders; kept as in the base preset, like the routing"),
    (r"_transpose_quantize$",
     "a 13-bit mask of allowed scale steps (8,192 values) that only snaps modulated pitch"),
)


def never_learned_reason(name: str) -> str | None:
    """Why a control is never learned, or ``None`` when it is learnable."""
    for pattern, reason in NEVER_LEARNED:
        if re.search(pattern, name):
            return reason
    return None


@dataclass(frozen=True)
class ModRoute:
    """A fixed modulation route whose amount (-1..1) is learned like any knob."""

    source: str
    destination: str

    @property
    def name(self) -> str:
        return f"mod_{self.source}_to_{self.destination}"


# Routes that make the basic subtractive and wavetable gestures reachable:
# a filter sweep (envelope 2 -> cutoff) and a moving wavetable (LFO 1 -> frame).
CORE_ROUTES: tuple[ModRoute, ...] = (
    ModRoute("env_2", "filter_1_cutoff"),
    ModRoute("lfo_1", "osc_1_wave_frame"),
)

_CORE_MODULES = frozenset({"osc_1", "osc_2", "filter_1", "env_1", "env_2"})
# volume: the level; lfo_1_frequency: the rate of the LFO 1 route.
_CORE_EXTRA = frozenset({"volume", "lfo_1_frequency"})


# studio: what real presets commonly use (synth/data/studio_prior.json counts it): three
# oscillators, two filters, the sample (noise) source, three envelopes, two LFOs and every
# effect; its routes are the most common ones in real presets.
_STUDIO_MODULES = frozenset({"osc_1", "osc_2", "osc_3", "filter_1", "filter_2", "sample",
                             "env_1", "env_2", "env_3", "lfo_1", "lfo_2", *EFFECTS})


def _studio_routes() -> tuple[ModRoute, ...]:
    """The routes real presets use most, then core's where they are not among them: studio
    holds every core parameter, so a core patch (a core network's answer, a core library's
    entry) plays the same carried into studio. LFO 1 -> oscillator 1 frame is used by one
    real preset of 30, and fell to the ties at the vocabulary's end: without it, a core
    patch that moved its wavetable lost the movement (a real preset's match, carried over,
    went from 1.39 to 2.45)."""
    common = tuple(ModRoute(r["source"], r["destination"]) for r in studio_prior()["vocabulary"])
    return common + tuple(r for r in CORE_ROUTES if r not in common)


@dataclass(frozen=True)
class ScopeDef:
    name: str
    description: str
    routes: tuple[ModRoute, ...]
    modules: frozenset[str] | None  # None: every module
    extra: frozenset[str] = frozenset()  # single controls of other modules
    # uniform draws turn effects on and use routes at real presets' rates
    # (synth/data/studio_prior.json) rather than always using every route
    real_rates: bool = False
    # banks chosen from by class index: "wavetables" (each oscillator's, synth/wavetables.py)
    # and "lfos" (LFOs 1-2's shapes, synth/lfo_shapes.py)
    banks: tuple[str, ...] = ()

    def includes(self, control: Control) -> bool:
        if never_learned_reason(control.name) is not None:
            return False
        if self.modules is None:
            return True
        return control.module in self.modules or control.name in self.extra


SCOPES: dict[str, ScopeDef] = {
    "core": ScopeDef(
        "core",
        "oscillators 1-2, filter 1, envelopes 1-2, volume, LFO 1 rate, and the routes "
        "envelope 2 -> filter 1 cutoff and LFO 1 -> oscillator 1 wave frame",
        CORE_ROUTES, _CORE_MODULES, _CORE_EXTRA,
    ),
    "full": ScopeDef("full", "every learnable control, and the core routes", CORE_ROUTES, None),
    "studio": ScopeDef(
        "studio",
        "oscillators 1-3, filters 1-2, the sample source, envelopes 1-3, LFOs 1-2, every "
        "effect, volume, each oscillator's wavetable and each LFO's shape from a bank "
        "(synth/data/wavetable_bank.json, lfo_shape_bank.json), the 24 modulation "
        "routes real presets use most (synth/data/studio_prior.json) and core's two",
        _studio_routes(), _STUDIO_MODULES, frozenset({"volume"}), real_rates=True,
        banks=("wavetables", "lfos"),
    ),
}
