"""Effects on training clips (``model.augment``): real renders, checked by what is heard."""

import numpy as np
import pytest
import torch

from distributed.train import TrainConfig
from model.augment import Augment, AugmentConfig
from synth import RenderConfig, Renderer, Sampler, SamplerConfig, get_space
from synth.config import ConfigError

SR = 44100
NOTE_OFF = 1.5  # seconds


@pytest.fixture(scope="module")
def clips():
    """Four audible sampled presets with a short release, so their tails are near silent."""
    space = get_space("core")
    renderer = Renderer(space, RenderConfig(note_dur=NOTE_OFF, render_dur=2.0))
    sampler = Sampler(SamplerConfig(seed=11))
    release = [p.name for p in space.continuous].index("env_1_release")
    audio = []
    for s in sampler.samples(range(12)):
        s.patch.continuous[release] = 0.0
        clip = renderer.render(s.patch, s.note).audio
        if np.sqrt(np.mean(clip ** 2)) > 1e-3 and len(audio) < 4:
            audio.append(clip)
    return torch.from_numpy(np.stack(audio))


def _rms(x):
    return x.square().mean(1).sqrt()


def _tail(x):
    return _rms(x[:, int((NOTE_OFF + 0.15) * SR):])


def test_off_by_default_and_repeatable(clips):
    assert Augment(AugmentConfig(), SR)(clips) is clips
    cfg = AugmentConfig(chorus=0.5, echo=0.5, reverb=0.5, bank=4)
    a, b = Augment(cfg, SR, seed=3)(clips), Augment(cfg, SR, seed=3)(clips)
    assert torch.equal(a, b)
    assert not torch.equal(a, Augment(cfg, SR, seed=4)(clips))


@pytest.mark.parametrize("effect", ["reverb", "echo"])
def test_reverb_and_echo_ring_on_after_the_note_at_the_same_level(clips, effect):
    cfg = AugmentConfig(**{effect: 1.0, f"{effect}_mix": (0.5, 0.5)}, bank=4)
    wet = Augment(cfg, SR)(clips)
    assert wet.shape == clips.shape and wet.dtype == clips.dtype
    assert torch.isfinite(wet).all()
    assert torch.allclose(_rms(wet), _rms(clips), rtol=1e-3)  # the level is the dry clip's
    assert (_tail(wet) > 3 * _tail(clips) + 1e-4).all()  # the note rings on after note-off


def test_chorus_moves_the_sound_but_not_its_level(clips):
    wet = Augment(AugmentConfig(chorus=1.0, chorus_mix=(0.5, 0.5)), SR)(clips)
    assert torch.allclose(_rms(wet), _rms(clips), rtol=1e-3)
    assert ((wet - clips).abs().mean(1) > 0.05 * clips.abs().mean(1)).all()
    assert _tail(wet).max() < 0.05 * _rms(clips).min()  # no tail: a chorus does not ring on


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ConfigError, match="reverb"):
        AugmentConfig(reverb=1.5)
    with pytest.raises(ConfigError, match="echo_mix"):
        AugmentConfig(echo_mix=(0.6, 0.2))
    cfg = TrainConfig.from_dict({"data": "d", "out": "o", "augment": {"reverb": 0.6}})
    assert cfg.augment == AugmentConfig(reverb=0.6)
    with pytest.raises(ConfigError, match="augment"):
        TrainConfig.from_dict({"data": "d", "out": "o", "augment": {"reverbb": 0.6}})
