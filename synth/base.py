"""The base preset that uniformly sampled patches are applied to.

It is Vital's init preset with three changes that make the ``core`` scope
expressive, built here in code so that it is reproducible and versioned:

- oscillators 1 and 2 play a "basic shapes" wavetable (sine -> triangle ->
  saw -> square across the frames), so the wave frame and the LFO 1 -> wave
  frame route change the timbre (the init wavetable is one saw frame);
- the ``core`` routes are connected, with amount 0 (a renderer connects its own scope's
  others, see ``synth.render.Renderer``: every connected route costs render time, about
  0.5% each, so the base carries only what the shipped model uses);
- LFO 1 runs free in seconds rather than synced to the tempo, so its rate
  parameter means the same thing at any tempo.
"""

from __future__ import annotations

import base64
import functools
import json

import numpy as np
import vita

from synth.preset import VITAL_RELEASE, Preset, parse_preset
from synth.scopes import CORE_ROUTES

BASE_NAME = "synthmatch-base"
WAVE_SIZE = 2048  # samples per wavetable frame, Vital's fixed size
_SHAPE_POSITIONS = (0, 85, 170, 256)  # keyframe positions; Vital has frames 0..256


def _basic_shapes() -> list[np.ndarray]:
    t = np.arange(WAVE_SIZE) / WAVE_SIZE
    sine = np.sin(2 * np.pi * t)
    triangle = 1.0 - 4.0 * np.abs(((t + 0.25) % 1.0) - 0.5)
    saw = 1.0 - 2.0 * ((t + 0.5) % 1.0)  # Vital's init saw: 0 at the start, falling
    square = np.where(t < 0.5, 1.0, -1.0)
    return [w.astype("<f4") for w in (sine, triangle, saw, square)]


def _wavetable(template: dict) -> dict:
    table = json.loads(json.dumps(template))
    table["name"] = "Basic Shapes"
    component = table["groups"][0]["components"][0]
    component["keyframes"] = [
        {"position": pos, "wave_data": base64.b64encode(w.tobytes()).decode("ascii")}
        for pos, w in zip(_SHAPE_POSITIONS, _basic_shapes(), strict=True)
    ]
    return table


@functools.cache
def _base_json() -> str:
    synth = vita.Synth()
    for route in sorted(CORE_ROUTES, key=lambda r: r.name):
        if not synth.connect_modulation(route.source, route.destination):
            raise RuntimeError(f"vita refused the route {route.source} -> {route.destination}")
    synth.get_controls()["lfo_1_sync"].set(0.0)  # 0 = "Seconds"
    data = json.loads(synth.to_json())
    settings = data["settings"]
    for i in range(64):  # connecting a route may set its amount; start from 0
        settings[f"modulation_{i + 1}_amount"] = 0.0
    for osc in (0, 1):
        settings["wavetables"][osc] = _wavetable(settings["wavetables"][osc])
    data.update(preset_name="synthmatch base", author="synthmatch", synth_version=VITAL_RELEASE,
                comments="Vital's init preset with a basic-shapes wavetable on oscillators 1-2 "
                         "and synthmatch's fixed modulation routes.")
    return json.dumps(data)


def base_preset() -> Preset:
    """A fresh copy of the base preset."""
    return parse_preset(_base_json(), source=BASE_NAME, name=BASE_NAME)
