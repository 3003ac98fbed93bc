"""The LFO shape bank: the shapes a ``studio`` LFO chooses from, by class index.

A Vital LFO's shape is a drawn line (``settings.lfos[i]``): ``num_points`` points
``(x, y)`` over one cycle, flattened into ``points``, with a curve ``power`` per segment and
a ``smooth`` flag. The bank holds Vital's init triangle and a few standard shapes (sine,
ramps, square, decays), then every distinct shape of the real presets (see
:mod:`synth.bank`). ``python -m synth bank`` writes ``synth/data/lfo_shape_bank.json``.
Shapes are compared by :func:`shape_curve`: the line sampled at 64 points of its cycle.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import vita

from synth.bank import VERSION, Bank, Entry, harvest_entries, load_manifest, sound_digest, stand_ins

LFO_BANK_PATH = Path(__file__).resolve().parent / "data" / "lfo_shape_bank.json"
FORMAT = "synthmatch-lfo-shape-bank"
_SOUND_KEYS = ("num_points", "points", "powers", "smooth")
_CURVE_POINTS = 64

# Standard shapes as (name, [(x, y), ...], powers, smooth). Vital draws y = 0 at the top,
# so its init triangle [(0, 1), (0.5, 0), (1, 1)] starts at the bottom.
_STANDARD = (
    ("Sine", [(0.0, 1.0), (0.5, 0.0), (1.0, 1.0)], [0.0, 0.0, 0.0], True),
    ("Ramp Up", [(0.0, 1.0), (1.0, 0.0)], [0.0, 0.0], False),
    ("Ramp Down", [(0.0, 0.0), (1.0, 1.0)], [0.0, 0.0], False),
    ("Square", [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (1.0, 1.0)], [0.0] * 4, False),
    ("Decay", [(0.0, 0.0), (1.0, 1.0)], [-6.0, 0.0], False),
    ("Rise", [(0.0, 1.0), (1.0, 0.0)], [6.0, 0.0], False),
)


@functools.cache
def _init_shape_json() -> str:
    return json.dumps(json.loads(vita.Synth().to_json())["settings"]["lfos"][0])


def init_shape() -> dict:
    """Vital's init LFO shape: a triangle."""
    return json.loads(_init_shape_json())


def line_shape(name: str, points: list[tuple[float, float]], powers: list[float],
               smooth: bool) -> dict:
    return {"name": name, "num_points": len(points),
            "points": [float(v) for xy in points for v in xy],
            "powers": [float(p) for p in powers], "smooth": bool(smooth)}


def shape_curve(shape: dict) -> np.ndarray:
    """The shape's value (1 at the top) at 64 evenly spaced points of one cycle, shape
    ``(64,)``. Each segment bends by its power as Vital's ``powerScale`` does,
    ``(e^(p t) - 1) / (e^p - 1)``; a smooth shape eases each segment with a half cosine."""
    pts = np.asarray(shape.get("points", []), np.float64).reshape(-1, 2)
    powers = list(shape.get("powers", [])) + [0.0] * len(pts)
    x = (np.arange(_CURVE_POINTS) + 0.5) / _CURVE_POINTS
    if len(pts) < 2:
        return np.full(_CURVE_POINTS, 1.0 - (pts[0, 1] if len(pts) else 0.0))
    out = np.empty_like(x)
    for j, xj in enumerate(x):
        i = int(np.clip(np.searchsorted(pts[:, 0], xj, side="right") - 1, 0, len(pts) - 2))
        (x0, y0), (x1, y1) = pts[i], pts[i + 1]
        t = 0.0 if x1 <= x0 else float(np.clip((xj - x0) / (x1 - x0), 0.0, 1.0))
        p = float(powers[i])
        if abs(p) > 1e-6:
            t = (np.exp(p * t) - 1.0) / (np.exp(p) - 1.0)
        if shape.get("smooth"):
            t = 0.5 - 0.5 * np.cos(np.pi * t)
        out[j] = 1.0 - (y0 + (y1 - y0) * t)
    return out


class LfoShapeBank(Bank):
    """The LFOs' shapes by class index (``settings.lfos``)."""

    format = FORMAT
    settings_key = "lfos"
    sound_keys = _SOUND_KEYS
    what = "LFO shape"

    def builtin(self, entry: Entry) -> dict:
        if entry.name == "Triangle":
            return init_shape()
        name, points, powers, smooth = next(s for s in _STANDARD if s[0] == entry.name)
        return line_shape(name, points, powers, smooth)

    def fingerprint(self, table: dict) -> np.ndarray:
        return shape_curve(table)


def build_lfo_manifest(paths: list[Path], credit: str = "") -> dict:
    """The LFO shape bank's manifest: the init triangle, the standard shapes, then every
    distinct shape of LFOs 1-8 of the presets at ``paths``."""
    builtin = [{"name": "Triangle", "kind": "basic",
                "digest": sound_digest(init_shape(), _SOUND_KEYS)}]
    builtin += [{"name": name, "kind": "basic",
                 "digest": sound_digest(line_shape(name, pts, pw, sm), _SOUND_KEYS)}
                for name, pts, pw, sm in _STANDARD]
    manifest = {"format": FORMAT, "version": VERSION, "credit": credit,
                "entries": harvest_entries(LfoShapeBank, builtin, paths, slots=8)}
    manifest["stand_ins"] = stand_ins(LfoShapeBank(manifest,
                                                   presets=paths[0].parent if paths else None))
    return manifest


@functools.cache
def get_lfo_bank() -> LfoShapeBank:
    """The shipped LFO shape bank (``synth/data/lfo_shape_bank.json``)."""
    return LfoShapeBank(load_manifest(LFO_BANK_PATH))
