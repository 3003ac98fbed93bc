"""What real presets are made of, counted: the prior the ``studio`` scope is built on.

``python -m synth prior --presets ../shared/real-presets`` reads a folder of human-made
``.vital`` presets and writes ``synth/data/studio_prior.json``: how many presets turn each
effect and each oscillator on, and how many use each modulation route (source ->
destination) whose source and destination the ``studio`` scope has. The scope's route
vocabulary is the most common of those routes (ties by name), and the sampler turns effects
on and uses routes at the rates counted here, so that uniform draws look like the
population people make (most presets use reverb, few use every effect). The file keeps
its provenance: every preset's name and sha256, and the presets' author and licence.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from pathlib import Path

PRIOR_PATH = Path(__file__).resolve().parent / "data" / "studio_prior.json"
FORMAT = "synthmatch-studio-prior"
VERSION = 1
VOCABULARY_SIZE = 24

EFFECTS = ("chorus", "compressor", "delay", "distortion", "eq", "filter_fx", "flanger",
           "phaser", "reverb")
# Modulation sources the studio scope has knobs for, or that need none (the played note,
# its velocity); macros, the mod wheel, LFOs 3-8 and the random generators are not in it.
ROUTE_SOURCES = ("env_1", "env_2", "env_3", "lfo_1", "lfo_2", "note", "velocity")
# Destinations: knobs of these modules (a route onto another route's amount is not one).
ROUTE_MODULES = ("osc_1", "osc_2", "osc_3", "filter_1", "filter_2", "sample", "env_1",
                 "env_2", "env_3", "lfo_1", "lfo_2", *EFFECTS)


def _destination_module(name: str) -> str | None:
    for module in sorted(ROUTE_MODULES, key=len, reverse=True):
        if name.startswith(module + "_"):
            return module
    return None


def count(paths: list[Path], credit: str = "") -> dict:
    """The prior of the presets at ``paths``: counts, rates and the route vocabulary."""
    from synth.preset import load_preset  # synth.scopes imports this module

    if not paths:
        raise ValueError("no presets to count")
    effects, oscillators, routes = Counter(), Counter(), Counter()
    sources = []
    for path in sorted(paths):
        preset = load_preset(path)
        settings = preset.data["settings"]
        sources.append({"name": path.name,
                        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
        effects.update(e for e in EFFECTS if settings.get(f"{e}_on", 0.0))
        oscillators.update(f"osc_{n}" for n in (1, 2, 3) if settings.get(f"osc_{n}_on", 0.0))
        used = {(m.get("source", ""), m.get("destination", ""))
                for m in settings.get("modulations", [])}
        routes.update((s, d) for s, d in used
                      if s in ROUTE_SOURCES and _destination_module(d) is not None)
    n = len(paths)
    ranked = sorted(routes.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "format": FORMAT, "version": VERSION,
        "presets": n, "credit": credit, "sources": sources,
        "effects_on": {e: round(effects[e] / n, 4) for e in EFFECTS},
        "oscillators_on": {o: round(oscillators[o] / n, 4) for o in ("osc_1", "osc_2", "osc_3")},
        "routes": [{"source": s, "destination": d, "presets": c} for (s, d), c in ranked],
        "vocabulary": [{"source": s, "destination": d, "rate": round(c / n, 4)}
                       for (s, d), c in ranked[:VOCABULARY_SIZE]],
    }


def smoothed(rate: float, presets: int) -> float:
    """A counted rate with one made-up use and one made-up non-use added (Laplace's rule of
    succession): what 30 presets never did is drawn now and then, not never."""
    return (rate * presets + 1.0) / (presets + 2.0)


@functools.cache
def studio_prior() -> dict:
    """The shipped prior (``synth/data/studio_prior.json``), checked for its format."""
    data = json.loads(PRIOR_PATH.read_text())
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise ValueError(f"{PRIOR_PATH}: not a {FORMAT} file of version {VERSION}")
    return data
