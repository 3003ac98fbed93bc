"""Vital's controls, discovered from vita at run time.

Nothing here is a choice of ours: every field comes from
``vita.Synth.get_control_details``. Our choices (which controls are learned,
how they map to [0, 1], which subsets a model learns) live in
``synth.scopes`` and ``synth.scales``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import vita

VITA_VERSION: str = vita.version.__version__

# Modules named by a numbered or "fx" prefix (osc_1, filter_fx, modulation_12, ...)
# or by an effect's name; everything else is a global control.
_NUMBERED_MODULE = re.compile(r"^((?:osc|filter|env|lfo|random|modulation)_(?:\d+|fx))_")
_NAMED_MODULES = (
    "chorus", "compressor", "delay", "distortion", "eq", "flanger", "phaser", "reverb", "sample",
)


def module_of(name: str) -> str:
    """The module a control belongs to: ``osc_1``, ``filter_fx``, ``reverb``, or ``global``."""
    match = _NUMBERED_MODULE.match(name)
    if match:
        return match.group(1)
    head = name.split("_", 1)[0]
    return head if head in _NAMED_MODULES else "global"


@dataclass(frozen=True)
class Control:
    """One Vital control as vita reports it. Values are Vital's raw (stored) values."""

    name: str
    module: str
    display_name: str
    min: float
    max: float
    default: float
    scale: str  # "linear", "quadratic", "quartic", "exponential", "square_root", "indexed"
    discrete: bool
    options: tuple[str, ...]  # labels for discrete values; may be shorter than num_values
    units: str
    display_multiply: float
    post_offset: float

    @property
    def num_values(self) -> int:
        """How many values a discrete control takes (``max - min + 1``)."""
        return int(round(self.max - self.min)) + 1

    def label(self, index: int) -> str:
        """The display label of discrete value ``index`` (counted from ``min``)."""
        if index < len(self.options):
            return self.options[index]
        return f"{self.min + index:g}"


_DISPLAY = re.compile(r"^(-?\d+(?:\.\d*)?)(.*)$", re.DOTALL)


def display_text(control: Control, text: str) -> str:
    """vita's display text for ``control`` (six decimals: ``"3.919453 secs"``) as Vital's
    interface shows it, so that a user can dial it in.

    Vital's sliders (``SynthSlider::formatValue``) show a value with at most five
    characters, one more for a minus sign, and no trailing point; indexed controls show a
    whole number; labelled options (``"Analog"``, ``"On"``) are shown as they are. The unit
    suffix is vita's own. ``3.919453 secs`` -> ``3.919 secs``, ``-41.939865 semitones`` ->
    ``-41.93 semitones``, ``2.000000v`` -> ``2v``, ``0.000000`` -> ``0``.
    """
    match = _DISPLAY.match(text.strip())
    if match is None:  # an option label
        return text
    number, units = match.groups()
    value = float(number)
    if control.discrete:
        return f"{round(value):d}{units}"
    digits = f"{value:.5f}"[: 6 if value < 0 else 5].rstrip(".")
    if digits in ("-0", "-0.0", "-0.00", "-0.000"):
        digits = digits[1:]
    return digits + units


def _scale_name(scale: object) -> str:
    # "ValueScale.SquareRoot" -> "square_root"
    raw = str(scale).rsplit(".", 1)[-1]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", raw).lower()


@functools.cache
def discover_controls() -> dict[str, Control]:
    """Every control of this vita build, keyed by name, in vita's order."""
    synth = vita.Synth()
    controls = {}
    for name in synth.get_controls():
        info = synth.get_control_details(name)
        controls[name] = Control(
            name=name,
            module=module_of(name),
            display_name=info.display_name,
            min=float(info.min),
            max=float(info.max),
            default=float(info.default_value),
            scale=_scale_name(info.scale),
            discrete=bool(info.is_discrete),
            options=tuple(info.options or ()),
            units=info.display_units.strip(),
            display_multiply=float(info.display_multiply),
            post_offset=float(info.post_offset),
        )
    return controls
