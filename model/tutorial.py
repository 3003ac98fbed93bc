"""A plain-language tutorial for building a matched preset by hand in Vital.

With ``ANTHROPIC_API_KEY`` set, Claude (through the ``anthropic`` client; model,
timeout and retries configurable) is given the parameters grouped by Vital's
sections, in Vital's own display text and units, and asked for steps a person
follows in Vital's interface. Without a key, or when the call fails, an offline
tutorial is built from a template: the same groups, in the order one works in
Vital, with the same display values. Lives in ``model`` so that both the CLI and
the Serve app can use it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger("model.tutorial")

# Vital's sections in the order one builds a sound, with the modules they hold.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Oscillator 1 (OSC 1)", ("osc_1",)),
    ("Oscillator 2 (OSC 2)", ("osc_2",)),
    ("Oscillator 3 (OSC 3)", ("osc_3",)),
    ("Sample", ("sample",)),
    ("Filter 1", ("filter_1",)),
    ("Filter 2", ("filter_2",)),
    ("Envelope 1: the amplitude envelope (ENV 1)", ("env_1",)),
    ("Envelope 2 (ENV 2)", ("env_2",)),
    ("LFO 1", ("lfo_1",)),
    ("Modulation matrix", ("modulation",)),
    ("Effects", ("chorus", "compressor", "delay", "distortion", "eq", "flanger", "phaser",
                 "reverb", "filter_fx")),
    ("Master", ("global",)),
)
SYSTEM = ("You teach sound design in the Vital synthesizer. Write a short tutorial that a "
          "producer follows in Vital's interface to rebuild a preset: numbered steps grouped "
          "by section (oscillators, filters, envelopes, LFOs, modulation, master), naming each "
          "knob as Vital labels it and the value to set. Start from Vital's init preset. Skip "
          "sections that are switched off. Mention what each section contributes to the sound "
          "in one short clause. No preamble.")


@dataclass(frozen=True)
class TutorialConfig:
    model: str = "claude-sonnet-4-6"
    timeout_s: float = 30.0
    max_retries: int = 2
    max_tokens: int = 1500


@dataclass
class Tutorial:
    text: str
    source: str  # "claude" or "offline"
    note: str = ""  # why the offline template was used, if it was


def group_parameters(params: list[dict], modules: dict[str, str]) -> list[tuple[str, list[dict]]]:
    """``params`` (name, text, ...) grouped by Vital section, switched-off modules dropped."""
    switched_off = {modules[p["name"]] for p in params
                    if p["name"].endswith("_on") and p["text"].lower() == "off"}
    groups = []
    for title, mods in SECTIONS:
        rows = [p for p in params if modules.get(p["name"]) in mods
                and modules[p["name"]] not in switched_off]
        if rows:
            groups.append((title, rows))
    return groups


def _label(name: str) -> str:
    return name.replace("_", " ")


def describe(groups: list[tuple[str, list[dict]]]) -> str:
    """The grouped parameters as text, for the prompt and the offline tutorial."""
    lines = []
    for title, rows in groups:
        lines.append(f"{title}:")
        lines += [f"  - {_label(p['name'])}: {p['text']}" for p in rows]
    return "\n".join(lines)


def offline_tutorial(groups: list[tuple[str, list[dict]]], note: int | None = None) -> str:
    steps = ["1. In Vital, load the init preset (the preset menu: Init Preset)."]
    for i, (title, rows) in enumerate(groups, start=2):
        settings = "; ".join(f"{_label(p['name'])} = {p['text']}" for p in rows)
        steps.append(f"{i}. {title}: set {settings}.")
    tail = f" Play MIDI note {note} to compare with your clip." if note is not None else ""
    steps.append(f"{len(groups) + 2}. Save the preset.{tail}")
    return "\n".join(steps)


def write_tutorial(params: list[dict], modules: dict[str, str], note: int | None = None,
                   description: str = "", config: TutorialConfig | None = None,
                   base_url: str | None = None) -> Tutorial:
    """Claude's tutorial when a key is set and the call succeeds, else the offline one."""
    cfg = config or TutorialConfig()
    groups = group_parameters(params, modules)
    key = os.environ.get("ANTHROPIC_API_KEY")
    if not key:
        return Tutorial(offline_tutorial(groups, note), "offline", "no ANTHROPIC_API_KEY set")
    import anthropic

    client = anthropic.Anthropic(api_key=key, base_url=base_url, timeout=cfg.timeout_s,
                                 max_retries=cfg.max_retries)
    prompt = (f"The sound: {description or 'a single synth note'}"
              + (f", played at MIDI note {note}" if note is not None else "")
              + ".\nThe preset's settings, by Vital section, in Vital's display units:\n"
              + describe(groups))
    try:
        reply = client.messages.create(model=cfg.model, max_tokens=cfg.max_tokens, system=SYSTEM,
                                       messages=[{"role": "user", "content": prompt}])
        text = "".join(b.text for b in reply.content if getattr(b, "type", "") == "text")
        if not text.strip():
            raise ValueError("the reply had no text")
        return Tutorial(text, "claude")
    except (anthropic.APIError, ValueError) as exc:
        reason = f"the Claude call failed ({exc.__class__.__name__})"
        log.warning("%s; using the offline tutorial", reason)
        return Tutorial(offline_tutorial(groups, note), "offline", reason)
