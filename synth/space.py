"""The parameter space a model learns: one scope of Vital's controls, as vectors.

A preset inside a scope is a :class:`Patch`: a float64 vector of unit values
for the continuous parameters and an int64 vector of class indices for the
discrete ones. Everything else (sampling, the Parquet schema, the model's
heads, preset export) derives its layout from :class:`ParameterSpace`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from synth.bank import Bank
from synth.controls import VITA_VERSION, Control, discover_controls
from synth.lfo_shapes import get_lfo_bank
from synth.scales import UnitMap, Warp, volume_db, volume_raw, warp_for
from synth.scopes import SCOPES, ModRoute, never_learned_reason
from synth.wavetables import get_bank

_BANKS = {"wavetables": get_bank, "lfos": get_lfo_bank}

SPACE_FORMAT = 1

# An oscillator's controls that act only with more than one unison voice, only with a
# distortion type, only with a spectral-morph type (``ParameterSpace.audible``)
# (not its stereo spread: that moves even one voice's sound)
_UNISON = ("detune_power", "detune_range", "unison_blend", "unison_detune", "frame_spread",
           "spectral_morph_spread", "distortion_spread")
_DISTORTION = ("distortion_amount", "distortion_phase", "distortion_spread")
_SPECTRAL_MORPH = ("spectral_morph_amount", "spectral_morph_spread")
# modules heard only through the routes from them (in the base preset; env_1 is the
# amplitude envelope, wired in)
_MOD_SOURCES = ("env_2", "env_3", "lfo_1", "lfo_2", "lfo_3", "lfo_4")


class SpaceError(ValueError):
    """A value that does not belong to the parameter space."""


@dataclass(frozen=True)
class Param:
    """One learned parameter: a Vital control, the amount of a fixed modulation route, or
    a choice from a bank (an oscillator's wavetable, an LFO's shape: a class index)."""

    name: str
    kind: Literal["continuous", "categorical"]
    module: str
    lo: float
    hi: float
    default: float
    warp: Warp | None  # continuous only
    num_classes: int  # categorical only (0 for continuous)
    control: Control | None  # None for a route
    route: ModRoute | None  # None for a control
    switch: str | None  # the "<module>_on" control that silences this one, if any
    bank: str | None = None  # a bank choice: the settings list it fills ("wavetables", "lfos")
    slot: int | None = None  # ... and which entry of it (1-based: the oscillator or LFO)

    def definition(self) -> list:
        """What identifies this parameter in the space id."""
        tail = self.warp.value if self.warp else self.num_classes
        return [self.name, self.kind, self.lo, self.hi, tail]


def _control_param(control: Control, switches: set[str]) -> Param:
    switch = f"{control.module}_on"
    switch = switch if switch in switches and switch != control.name else None
    if control.discrete:
        return Param(control.name, "categorical", control.module, control.min, control.max,
                     control.default, None, control.num_values, control, None, switch)
    return Param(control.name, "continuous", control.module, control.min, control.max,
                 control.default, warp_for(control), 0, control, None, switch)


def _route_param(route: ModRoute) -> Param:
    return Param(route.name, "continuous", "modulation", -1.0, 1.0, 0.0, Warp.LINEAR, 0,
                 None, route, None)


# The base preset's choices: basic shapes on oscillators 1-2, Vital's init saw on 3, and
# Vital's init triangle on every LFO.
_BASE_CHOICES = {("wavetables", 1): "Basic Shapes", ("wavetables", 2): "Basic Shapes",
                 ("wavetables", 3): "Init", ("lfos", 1): "Triangle", ("lfos", 2): "Triangle"}
BANK_SLOTS = {"wavetables": (1, 2, 3), "lfos": (1, 2)}  # what a scope with the bank chooses


def _choice_param(key: str, slot: int, bank: Bank) -> Param:
    default = float(bank.index(_BASE_CHOICES[(key, slot)]))
    if key == "wavetables":
        name, module, switch = f"osc_{slot}_wavetable", f"osc_{slot}", f"osc_{slot}_on"
    else:
        name, module, switch = f"lfo_{slot}_shape", f"lfo_{slot}", None
    return Param(name, "categorical", module, 0.0, float(len(bank) - 1), default, None,
                 len(bank), None, None, switch, key, slot)


@dataclass(frozen=True)
class Patch:
    """A preset inside a scope.

    Attributes:
        continuous: unit values in [0, 1], shape ``(C,)``, float64.
        categorical: class indices, shape ``(K,)``, int64.
    """

    continuous: np.ndarray
    categorical: np.ndarray

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Patch)
                and np.array_equal(self.continuous, other.continuous)
                and np.array_equal(self.categorical, other.categorical))

    __hash__ = None  # mutable arrays inside


class ParameterSpace:
    """The parameters of one named scope, discovered from vita, with our mapping on top."""

    def __init__(self, scope: str = "core"):
        if scope not in SCOPES:
            raise SpaceError(f"unknown scope {scope!r}; choose one of {sorted(SCOPES)}")
        self.scope = SCOPES[scope]
        self.controls = discover_controls()
        switches = {n for n in self.controls if n.endswith("_on")}
        chosen = [_control_param(c, switches) for c in self.controls.values()
                  if self.scope.includes(c)]
        chosen += [_route_param(r) for r in self.scope.routes]
        self.banks: dict[str, Bank] = {key: _BANKS[key]() for key in self.scope.banks}
        chosen += [_choice_param(key, slot, bank) for key, bank in self.banks.items()
                   for slot in BANK_SLOTS[key]]
        self.continuous: tuple[Param, ...] = tuple(p for p in chosen if p.kind == "continuous")
        self.categorical: tuple[Param, ...] = tuple(p for p in chosen if p.kind == "categorical")
        self.params: tuple[Param, ...] = self.continuous + self.categorical
        self.index = {p.name: i for i, p in enumerate(self.params)}
        self.unit_map = UnitMap(
            np.array([p.lo for p in self.continuous]),
            np.array([p.hi for p in self.continuous]),
            [p.warp for p in self.continuous],
        )
        self._cat_lo = np.array([p.lo for p in self.categorical], dtype=np.float64)
        self.num_classes = np.array([p.num_classes for p in self.categorical], dtype=np.int64)

    @property
    def name(self) -> str:
        return self.scope.name

    @property
    def routes(self) -> tuple[ModRoute, ...]:
        return self.scope.routes

    def __repr__(self) -> str:
        return (f"ParameterSpace({self.name!r}, continuous={len(self.continuous)}, "
                f"categorical={len(self.categorical)}, id={self.id!r})")

    # -- identity -----------------------------------------------------------------
    def definition(self) -> dict:
        """Everything that gives a vector its meaning; hashed into :attr:`id`."""
        definition = {
            "format": SPACE_FORMAT,
            "scope": self.name,
            "vita": VITA_VERSION,
            "params": [p.definition() for p in self.params],
        }
        if self.banks:
            definition["banks"] = {key: bank.id for key, bank in self.banks.items()}
        return definition

    @functools.cached_property
    def id(self) -> str:
        """A stable identifier: the scope name and a hash of the definition and vita version."""
        blob = json.dumps(self.definition(), sort_keys=True, separators=(",", ":"))
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    def check_id(self, recorded: str, what: str) -> None:
        """Refuse an artifact made in another space."""
        if recorded != self.id:
            raise SpaceError(f"{what} was made in parameter space {recorded!r}, but this is "
                             f"{self.id!r} (scope {self.name!r}, vita {VITA_VERSION})")

    # -- conversions ----------------------------------------------------------------
    def default_raw(self) -> dict[str, float]:
        return {p.name: p.default for p in self.params}

    def patch_from_raw(self, raw: Mapping[str, float], *, where: str = "values") -> Patch:
        """Raw Vital values (missing ones take their defaults) -> :class:`Patch`.

        Raises:
            SpaceError: a value out of its range, not finite, or not a whole option index.
        """
        values = self.default_raw()
        values.update({k: float(v) for k, v in raw.items() if k in self.index})
        for p in self.params:
            v = values[p.name]
            if not np.isfinite(v) or v < p.lo or v > p.hi:
                raise SpaceError(f"{where}: {p.name} = {v!r} is outside its range "
                                 f"[{p.lo:g}, {p.hi:g}]")
            if p.kind == "categorical" and v != round(v):
                raise SpaceError(f"{where}: {p.name} = {v!r} is not one of its "
                                 f"{p.num_classes} options (whole numbers {p.lo:g}..{p.hi:g})")
        cont = self.unit_map.canonical(np.array([values[p.name] for p in self.continuous]))
        cat = np.array([values[p.name] for p in self.categorical], dtype=np.float64)
        return Patch(self.unit_map.to_unit(cont), np.rint(cat - self._cat_lo).astype(np.int64))

    def raw_from_patch(self, patch: Patch) -> dict[str, float]:
        """:class:`Patch` -> raw Vital values, keyed by parameter name."""
        self.validate(patch)
        cont = self.unit_map.to_raw(patch.continuous)
        cat = self._cat_lo + patch.categorical
        out = {p.name: float(v) for p, v in zip(self.continuous, cont, strict=True)}
        out.update({p.name: float(v) for p, v in zip(self.categorical, cat, strict=True)})
        return out

    def default_patch(self) -> Patch:
        return self.patch_from_raw({})

    def with_volume_change(self, patch: Patch, db: float) -> Patch:
        """``patch`` with its master volume moved by ``db`` decibels (as Vital shows it),
        kept inside the volume's range; ``patch`` itself when the scope has no volume."""
        if "volume" not in self.index or db == 0.0:
            return patch
        raw = self.raw_from_patch(patch)
        p = self.params[self.index["volume"]]
        raw["volume"] = float(np.clip(volume_raw(volume_db(raw["volume"]) + db), p.lo, p.hi))
        return self.patch_from_raw(raw, where="a volume change")

    def pitch_offset(self, patch: Patch) -> float:
        """Semitones from the played note to the pitch heard: the lowest transpose + tune
        among the oscillators that are on and follow the keyboard (oscillators stacked in
        octaves repeat at the lowest one's period, the pitch an f0 estimate finds; other
        intervals are left to the note head). Oscillators outside the scope count as in the
        base preset (oscillator 1 on, untransposed). 0 when none sounds."""
        raw = self.raw_from_patch(patch)
        offsets = [raw.get(f"osc_{n}_transpose", 0.0) + raw.get(f"osc_{n}_tune", 0.0)
                   for n in (1, 2, 3)
                   if raw.get(f"osc_{n}_on", 1.0 if n == 1 else 0.0) >= 0.5
                   and raw.get(f"osc_{n}_midi_track", 1.0) >= 0.5]
        return min(offsets, default=0.0)

    def audible(self, patch: Patch) -> np.ndarray:
        """Which continuous parameters can change ``patch``'s sound, as a bool mask.

        A parameter is silent when its module is switched off (its ``switch``); an
        oscillator's unison controls when it plays one voice, its distortion controls when
        its distortion type is None, its spectral-morph controls when that type is None; a
        modulation route when its destination is silent; and an envelope's or LFO's
        controls (but the amplitude envelope's, ``env_1``) when every route from it is at 0.
        Moving a silent parameter renders the same sound (up to the oscillators' random
        phase), so a search that moves only audible ones spends no render on it."""
        raw = self.raw_from_patch(patch)
        silent: set[str] = set()
        for p in self.continuous:
            if p.switch is not None and raw.get(p.switch, 1.0) < 0.5:
                silent.add(p.name)
        for n in (1, 2, 3):
            osc = f"osc_{n}"
            rules = ((f"{osc}_unison_voices", 1.0, _UNISON),
                     (f"{osc}_distortion_type", 0.0, _DISTORTION),
                     (f"{osc}_spectral_morph_type", 0.0, _SPECTRAL_MORPH))
            for control, off, names in rules:
                if control in raw and raw[control] == off:
                    silent.update(f"{osc}_{name}" for name in names)
        for route in self.routes:
            if route.destination in silent:
                silent.add(route.name)
        sounding = {route.source for route in self.routes
                    if route.name not in silent and raw[route.name] != 0.0}
        for p in self.continuous:
            if p.route is None and p.module in _MOD_SOURCES and p.module not in sounding:
                silent.add(p.name)
        return np.array([p.name not in silent for p in self.continuous])

    def validate(self, patch: Patch) -> None:
        """Raise :class:`SpaceError` naming the first parameter out of range."""
        cont, cat = np.asarray(patch.continuous), np.asarray(patch.categorical)
        if cont.shape != (len(self.continuous),) or cat.shape != (len(self.categorical),):
            raise SpaceError(
                f"patch has shapes {cont.shape} and {cat.shape}; scope {self.name!r} needs "
                f"({len(self.continuous)},) continuous and ({len(self.categorical)},) categorical")
        bad = np.flatnonzero(~np.isfinite(cont) | (cont < 0.0) | (cont > 1.0))
        if bad.size:
            p = self.continuous[bad[0]]
            raise SpaceError(f"{p.name}: unit value {float(cont[bad[0]])!r} is outside [0, 1]")
        bad = np.flatnonzero((cat < 0) | (cat >= self.num_classes))
        if bad.size:
            p = self.categorical[bad[0]]
            raise SpaceError(f"{p.name}: class {int(cat[bad[0]])} is outside "
                             f"0..{p.num_classes - 1}")

    def describe(self) -> list[dict]:
        """One row per parameter, for tables and JSON."""
        rows = []
        for p in self.params:
            c = p.control
            rows.append({
                "name": p.name, "module": p.module, "kind": p.kind,
                "min": p.lo, "max": p.hi, "default": p.default,
                "scale": c.scale if c else "bank" if p.bank else "linear",
                "mapping": p.warp.value if p.warp else f"{p.num_classes} classes",
                "units": c.units if c else "",
                "options": (list(c.options) if c and p.kind == "categorical"
                            else self.banks[p.bank].labels if p.bank else []),
            })
        return rows

    def choices(self, patch: Patch) -> dict[tuple[str, int], int]:
        """Each bank choice in ``patch``: ``(settings list, slot) -> class index`` (empty for
        scopes without banks)."""
        k = len(self.continuous)
        return {(p.bank, p.slot): int(patch.categorical[self.index[p.name] - k])
                for p in self.categorical if p.bank}

    def left_out_classes(self, preset_digest: str) -> dict[int, np.ndarray]:
        """For measuring on a preset whose tables the banks harvested (leave one out, as
        ``import_preset(..., leave_out=True)``): per bank choice the preset gave a table only
        it uses, the choice's column in ``Patch.categorical`` and a lookup sending each of
        those classes to the nearest other table of the bank, every other class to itself.
        Empty when the preset gave the banks nothing (and in scopes without banks)."""
        lookups = {}  # per bank: its slots share it
        for key, bank in self.banks.items():
            gone = bank.left_out(preset_digest)
            if gone:
                lookups[key] = np.arange(len(bank))
                for c in sorted(gone):
                    lookups[key][c] = bank.nearest(bank.table(c), exclude=gone)
        return self._by_column(lookups)

    def stand_in_classes(self) -> tuple[dict[int, np.ndarray], dict[str, int]]:
        """Where harvested tables cannot be read (the real presets folder is absent): per
        bank choice, its column and a lookup sending each such class to its built-in
        stand-in (``Bank.stand_in``), every other class to itself; and per bank, how many
        of its tables stand in. Both empty when every table can be read (and in scopes
        without banks)."""
        lookups, counts = {}, {}
        for key, bank in self.banks.items():
            gone = bank.unreadable()
            if gone:
                lookups[key] = np.arange(len(bank))
                for c in gone:
                    lookups[key][c] = bank.stand_in(c)
                counts[key] = len(gone)
        return self._by_column(lookups), counts

    def _by_column(self, lookups: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
        """Per-bank lookups as per-column ones: each choice of a bank gets its bank's."""
        k = len(self.continuous)
        return {self.index[p.name] - k: lookups[p.bank] for p in self.categorical
                if p.bank in lookups}

    @staticmethod
    def with_classes(patch: Patch, lookups: Mapping[int, np.ndarray]) -> Patch:
        """``patch`` with each categorical column in ``lookups`` sent through its lookup
        (``left_out_classes``); the patch itself when there is none."""
        if not lookups:
            return patch
        classes = patch.categorical.copy()
        for column, lookup in lookups.items():
            classes[column] = lookup[classes[column]]
        return Patch(patch.continuous, classes)

    def wavetables(self, patch: Patch) -> dict[int, int]:
        """Each oscillator's wavetable class in ``patch`` (empty for scopes without)."""
        return {slot: i for (key, slot), i in self.choices(patch).items() if key == "wavetables"}

    def excluded(self) -> dict[str, str]:
        """Controls left out of this scope, with the reason."""
        out = {}
        for name in self.controls:
            if name in self.index:
                continue
            out[name] = never_learned_reason(name) or f"outside scope {self.name!r}"
        return out


@functools.cache
def get_space(scope: str = "core") -> ParameterSpace:
    """The (cached) space of a named scope."""
    return ParameterSpace(scope)
