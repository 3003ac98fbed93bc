"""The Vital side of synthmatch: parameter space, sampling, rendering and presets.

Imports none of synthmatch's other packages and no Ray.
"""

from synth.base import BASE_NAME, base_preset
from synth.preset import (
                          Preset,
                          PresetError,
                          apply_patch,
                          import_preset,
                          load_preset,
                          parse_preset,
                          save_preset,
)
from synth.render import RenderConfig, Renderer, RenderError, RenderResult
from synth.sampling import Sample, Sampler, SamplerConfig
from synth.space import ParameterSpace, Patch, SpaceError, get_space

__all__ = [
    "BASE_NAME", "ParameterSpace", "Patch", "Preset", "PresetError", "RenderConfig",
    "RenderError", "RenderResult", "Renderer", "Sample", "Sampler", "SamplerConfig",
    "SpaceError", "apply_patch", "base_preset", "get_space", "import_preset", "load_preset",
    "parse_preset", "save_preset",
]
