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

import functools
import json

import vita

from synth.preset import VITAL_RELEASE, Preset, parse_preset
from synth.scopes import CORE_ROUTES
from synth.wavetables import basic_shapes_table

BASE_NAME = "synthmatch-base"


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
        settings["wavetables"][osc] = basic_shapes_table(settings["wavetables"][osc])
    data.update(preset_name="synthmatch base", author="synthmatch", synth_version=VITAL_RELEASE,
                comments="Vital's init preset with a basic-shapes wavetable on oscillators 1-2 "
                         "and synthmatch's fixed modulation routes.")
    return json.dumps(data)


def base_preset() -> Preset:
    """A fresh copy of the base preset."""
    return parse_preset(_base_json(), source=BASE_NAME, name=BASE_NAME)
