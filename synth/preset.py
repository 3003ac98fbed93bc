"""Vital presets (``.vital`` files): load and check, import into a scope, export.

A ``.vital`` file is JSON: a few text fields and ``settings``, which holds one
number per control plus ``modulations`` (64 source/destination slots),
``wavetables``, ``lfos`` and ``sample``. Export writes a patch's values into a
copy of a base preset's JSON, so everything outside the scope stays exactly as
it was in the base file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synth.controls import discover_controls
from synth.files import atomic_path
from synth.space import ParameterSpace, Patch, SpaceError

log = logging.getLogger("synth.preset")

# What we stamp on presets we make. Vital refuses presets from a newer version
# than itself, and vita's own serialiser writes a placeholder (99999.9.9), so
# we write the last public Vital release instead.
VITAL_RELEASE = "1.5.5"
MAX_PRESET_BYTES = 64 * 1024 * 1024  # real presets are 50-500 KB; samples can add a few MB
_STRUCTURED_SETTINGS = ("modulations", "wavetables", "lfos", "sample")
_NUM_MOD_SLOTS = 64


class PresetError(ValueError):
    """A preset file that cannot be used; the message names the file and the problem."""

    def __init__(self, source: str, problem: str):
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


@dataclass
class Preset:
    """A parsed, checked preset.

    Attributes:
        name: the file's stem (or a given name), used as the base preset's key.
        data: the preset JSON as a dict (never shared: copy before editing).
    """

    name: str
    data: dict = field(repr=False)

    @property
    def settings(self) -> dict:
        return self.data["settings"]

    def to_json(self) -> str:
        return json.dumps(self.data)

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON: identifies a base preset in datasets."""
        blob = json.dumps(self.data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def parse_preset(text: str | bytes, source: str = "<preset>", name: str | None = None) -> Preset:
    """Parse and check preset JSON.

    Raises:
        PresetError: not JSON, not a Vital preset, or a control value that is not a
            finite number inside the control's range.
    """
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PresetError(source, f"not valid JSON ({exc}); is the file truncated?") from None
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise PresetError(source, "not a Vital preset: no 'settings' object at the top level")
    settings = data["settings"]
    controls = discover_controls()
    known = [k for k in settings if k in controls]
    if len(known) < len(controls) // 2:
        raise PresetError(source, f"not a Vital preset: only {len(known)} of "
                                  f"{len(controls)} Vital controls in 'settings'")
    for key in known:
        value, c = settings[key], controls[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise PresetError(source, f"control {key} has value {value!r}, not a number")
        if not c.min <= value <= c.max:
            raise PresetError(source, f"control {key} = {value!r} is outside its range "
                                      f"[{c.min:g}, {c.max:g}]")
    mods = settings.get("modulations", [])
    if not isinstance(mods, list) or not all(isinstance(m, dict) for m in mods):
        raise PresetError(source, "'settings.modulations' is not a list of slots")
    stem = name or (Path(source).stem if source != "<preset>" else "preset")
    return Preset(stem, data)


def load_preset(path: str | os.PathLike) -> Preset:
    """Read and check a ``.vital`` file. See :func:`parse_preset` for the checks."""
    path = Path(path)
    source = str(path)
    if path.suffix.lower() != ".vital":
        raise PresetError(source, f"expected a .vital preset, got a {path.suffix or 'no'} "
                                  "extension")
    if not path.is_file():
        raise PresetError(source, "no such file")
    size = path.stat().st_size
    if size == 0:
        raise PresetError(source, "the file is empty")
    if size > MAX_PRESET_BYTES:
        raise PresetError(source, f"{size} bytes is larger than any Vital preset "
                                  f"({MAX_PRESET_BYTES} at most)")
    return parse_preset(path.read_bytes(), source)


def route_slot(settings: dict, source: str, destination: str) -> int | None:
    """1-based slot index of a connected route, or None."""
    for i, slot in enumerate(settings.get("modulations", [])):
        if slot.get("source") == source and slot.get("destination") == destination:
            return i + 1
    return None


def raw_values(preset: Preset, space: ParameterSpace,
               exclude: dict[str, frozenset[int]] | None = None) -> dict[str, float]:
    """The raw value of every parameter of ``space`` in ``preset``.

    Controls missing from older presets take vita's default; a route that is not
    connected has amount 0; an oscillator's wavetable and an LFO's shape are its own when
    the bank has it, else the nearest bank table (``exclude``: class indices not to choose,
    by bank).
    """
    exclude = exclude or {}
    settings = preset.settings
    values = {}
    for p in space.params:
        if p.bank is not None:
            tables = settings.get(p.bank, [])
            own = tables[p.slot - 1] if len(tables) >= p.slot else None
            skip = exclude.get(p.bank, frozenset())
            values[p.name] = (float(space.banks[p.bank].nearest(own, skip))
                              if isinstance(own, dict) else p.default)
        elif p.route is None:
            values[p.name] = float(settings.get(p.name, p.default))
        else:
            slot = route_slot(settings, p.route.source, p.route.destination)
            values[p.name] = float(settings.get(f"modulation_{slot}_amount", 0.0)) if slot else 0.0
    return values


# Modulation sources that hold one value for the whole note: the macros and the mod wheel
# at the values the preset saves, the velocity at the one synthmatch plays and matches at.
_CONSTANT_SOURCES = re.compile(r"^(macro_control_\d+|mod_wheel|velocity)$")
MATCH_VELOCITY = 0.8  # RenderConfig's and SamplerConfig's default


@dataclass(frozen=True)
class _Route:
    slot: int  # 1-based
    source: str
    destination: str
    amount: float


def _routes_outside(settings: dict, space: ParameterSpace) -> list[_Route]:
    """The connected routes with a non-zero amount that ``space`` has no parameter for."""
    kept = {(r.source, r.destination) for r in space.routes}
    found = []
    for i, slot in enumerate(settings.get("modulations", [])):
        pair = (slot.get("source", ""), slot.get("destination", ""))
        amount = float(settings.get(f"modulation_{i + 1}_amount", 0.0))
        if all(pair) and pair not in kept and amount:
            found.append(_Route(i + 1, *pair, amount))
    return found


def _fold_target(route: _Route, settings: dict, space: ParameterSpace, *,
                 any_target: bool = False) -> str | None:
    """The parameter of ``space`` that a constant-source route outside the scope can be
    folded into (its destination control, or the amount of a route the scope holds), or
    None when the route cannot be folded. ``any_target``: "" for a plain constant-source
    route whose destination the scope does not hold."""
    if not space.scope.real_rates or not _CONSTANT_SOURCES.match(route.source):
        return None
    plain = all(not settings.get(f"modulation_{route.slot}_{k}", 0.0)
                for k in ("power", "bipolar", "stereo", "bypass"))
    if not plain:  # a curved, bipolar, stereo or bypassed connection: not folded
        return None
    dest = route.destination
    if dest in space.index and space.params[space.index[dest]].route is None \
            and space.params[space.index[dest]].bank is None:
        return dest
    target = re.fullmatch(r"modulation_(\d+)_amount", dest)
    mods = settings.get("modulations", [])
    if target and int(target.group(1)) <= len(mods):
        slot = mods[int(target.group(1)) - 1]
        for r in space.routes:
            if (r.source, r.destination) == (slot.get("source"), slot.get("destination")):
                return r.name
    return "" if any_target else None


def _constant(route: _Route, settings: dict, velocity: float) -> float:
    return velocity if route.source == "velocity" else float(settings.get(route.source, 0.0))


def dropped_routes(preset: Preset, space: ParameterSpace,
                   velocity: float = MATCH_VELOCITY) -> list[str]:
    """The routes ``preset`` uses (a non-zero amount) that ``space`` neither has a
    parameter for nor folds into one (see :func:`fold_constant_routes`), as
    ``"source -> destination"``. A foldable route whose source sits at 0 changes nothing
    and is not dropped either."""
    settings = preset.settings
    return [f"{r.source} -> {r.destination}" for r in _routes_outside(settings, space)
            if _fold_target(r, settings, space) is None
            and not (_fold_target(r, settings, space, any_target=True) == ""
                     and _constant(r, settings, velocity) == 0.0)]


def fold_constant_routes(values: dict[str, float], settings: dict, space: ParameterSpace,
                         velocity: float = MATCH_VELOCITY) -> list[str]:
    """Fold each route outside the scope whose source is constant during a note (a macro or
    the mod wheel at its saved value, the velocity at ``velocity``) into the value it sets,
    in place; returns the folded routes as ``"source -> destination"``.

    Vital adds ``amount * source * (max - min)`` to the destination's raw value (checked
    against renders: a folded preset plays like the original, within the render noise), so
    a constant source is the same as a moved knob. Only in a scope with a route vocabulary
    (``studio``), and only for plain connections (no curve, not bipolar, stereo or
    bypassed); the destination is a control of the scope or the amount of one of its
    routes. The sum is clipped to the parameter's range.
    """
    folded = []
    controls = discover_controls()
    for route in _routes_outside(settings, space):
        name = _fold_target(route, settings, space)
        if name is None:
            continue
        source = _constant(route, settings, velocity)
        c = controls[route.destination]
        p = space.params[space.index[name]]
        values[name] = float(np.clip(values[name] + route.amount * source * (c.max - c.min),
                                     p.lo, p.hi))
        folded.append(f"{route.source} -> {route.destination}")
    return folded


# Vital's tempo table (vital::constants::kSyncedFrequencyRatios): cycles per beat for each
# ``<module>_tempo`` option, "Freeze" first; and what each ``<module>_sync`` mode multiplies
# it by (1 Tempo, 2 Tempo Dotted, 3 Tempo Triplets).
_SYNCED_RATIOS = (0.0, 1 / 128, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0, 8.0,
                  16.0)
_SYNC_MULTIPLIERS = {1: 1.0, 2: 2.0 / 3.0, 3: 3.0 / 2.0}


def free_running(values: dict[str, float], settings: dict, space: ParameterSpace) -> None:
    """Turn each tempo-synced rate of ``values`` (LFOs, chorus, delay, flanger, phaser) into
    the free rate it plays at the preset's saved tempo, in place: a scope whose draws run
    free (``studio``) then plays it the same whatever tempo the base preset keeps."""
    beats_per_second = float(settings.get("beats_per_minute", 2.0))  # stored per second
    for p in space.params:
        if not p.name.endswith("_sync"):
            continue
        module = p.name[: -len("_sync")]
        rate = space.index.get(f"{module}_frequency")
        mode = int(round(values[p.name]))
        if rate is None or f"{module}_tempo" not in space.index \
                or mode not in _SYNC_MULTIPLIERS:
            continue
        tempo = int(round(values[f"{module}_tempo"]))
        hz = _SYNCED_RATIOS[min(max(tempo, 0), len(_SYNCED_RATIOS) - 1)] * beats_per_second
        lo, hi = space.params[rate].lo, space.params[rate].hi
        values[f"{module}_frequency"] = (float(np.clip(np.log2(hz * _SYNC_MULTIPLIERS[mode]),
                                                       lo, hi)) if hz > 0 else lo)
        values[p.name] = 0.0  # "Seconds"


_warned: set[tuple[str, str]] = set()


def import_preset(preset: Preset, space: ParameterSpace, *, leave_out: bool = False,
                  velocity: float = MATCH_VELOCITY, warn: bool = True) -> Patch:
    """The patch of ``preset`` in ``space``; what lies outside the scope is ignored. In a
    scope with a route vocabulary (``studio``), a route outside it from a constant source
    (macros, mod wheel, velocity at ``velocity``) is folded into the value it sets
    (:func:`fold_constant_routes`); the routes it drops are named in a warning, once per
    preset and process (``warn=False``: none, for a caller that says it once itself).

    In a scope whose draws run free (``studio``), tempo-synced rates are imported as the
    free rates they play at the preset's saved tempo (:func:`free_running`).

    ``leave_out``: choose no wavetable or LFO shape that a bank holds only because this
    preset uses it (for measuring how well the bank covers presets it was not built from).
    """
    if warn and space.scope.real_rates and (preset.digest, space.id) not in _warned:
        _warned.add((preset.digest, space.id))
        dropped = dropped_routes(preset, space, velocity)
        if dropped:
            log.warning("%s: %d modulation routes outside the %s scope's vocabulary are "
                        "dropped: %s", preset.name, len(dropped), space.name, ", ".join(dropped))
    try:
        exclude = ({key: bank.left_out(preset.digest) for key, bank in space.banks.items()}
                   if leave_out else {})
        values = raw_values(preset, space, exclude)
        if space.scope.real_rates:
            fold_constant_routes(values, preset.settings, space, velocity)
            free_running(values, preset.settings, space)
        return space.patch_from_raw(values, where=preset.name)
    except SpaceError as exc:
        raise PresetError(preset.name, str(exc)) from None


def apply_patch(base: Preset, space: ParameterSpace, patch: Patch, *,
                name: str | None = None, comments: str | None = None,
                author: str = "synthmatch") -> Preset:
    """A new preset: ``base`` with the in-scope values of ``patch``.

    Routes are written to the slot that already connects them, else to the first
    empty slot (only when the amount is non-zero). Wavetables and LFO shapes chosen from a
    bank are written into ``settings.wavetables`` and ``settings.lfos``, so the file plays
    them in Vital.
    """
    data = copy.deepcopy(base.data)
    settings = data["settings"]
    for key, value in space.raw_from_patch(patch).items():
        p = space.params[space.index[key]]
        if p.bank is not None:
            settings[p.bank][p.slot - 1] = space.banks[p.bank].table(int(value))
            continue
        if p.route is None:
            settings[key] = value
            continue
        slot = route_slot(settings, p.route.source, p.route.destination)
        if slot is None and value != 0.0:
            slot = connect_route(settings, p.route.source, p.route.destination, base.name)
        if slot is not None:
            settings[f"modulation_{slot}_amount"] = value
    if name is not None:
        data["preset_name"] = name
    if comments is not None:
        data["comments"] = comments
    data["author"] = author
    if str(data.get("synth_version", "")).startswith("99999"):
        data["synth_version"] = VITAL_RELEASE
    return Preset(name or base.name, data)


def connect_route(settings: dict, source: str, destination: str, where: str) -> int:
    mods = settings.setdefault("modulations", [])
    while len(mods) < _NUM_MOD_SLOTS:
        mods.append({"source": "", "destination": ""})
    for i, slot in enumerate(mods):
        if not slot.get("source") and not slot.get("destination"):
            slot["source"], slot["destination"] = source, destination
            return i + 1
    raise PresetError(where, f"all {_NUM_MOD_SLOTS} modulation slots are in use; cannot add "
                             f"the route {source} -> {destination}")


def save_preset(preset: Preset, path: str | os.PathLike) -> Path:
    """Write a ``.vital`` file atomically (a temporary file renamed into place)."""
    path = Path(path)
    if path.suffix.lower() != ".vital":
        raise PresetError(str(path), "preset files must end in .vital")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(preset.data))
    return path
