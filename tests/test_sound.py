"""The sound objective (model.sound) on real vita renders, without Ray."""

import pytest
import torch

from model.features import FeatureConfig, LogMel
from model.network import MatchNet, ModelConfig, Outputs
from model.sound import SoundConfig, SoundObjective
from synth import RenderConfig, Renderer, get_space
from synth.config import ConfigError
from synth.sampling import Sampler

SHORT = RenderConfig(note_dur=0.5, render_dur=0.75)
FEATURES = FeatureConfig(duration_s=0.75, n_mels=32, n_fft=1024, hop=512)


def test_the_sound_loss_favours_the_draws_that_sound_like_the_clip():
    """A policy sure of a clip's patch except for two things, oscillator 1's switch (even
    odds) and the volume (too low): gradient steps on the sound loss alone turn the
    oscillator on, the only way to hear anything, and raise the volume towards the clip's."""
    space = get_space("core")
    layout = MatchNet(space, FEATURES, ModelConfig(channels=(8,), hidden=8)).layout
    sample = Sampler().sample(1)  # oscillator 1 on, oscillator 2 off, RMS 0.11
    frontend = LogMel(FEATURES)
    clip = torch.from_numpy(Renderer(space, SHORT).render(sample.patch, sample.note).audio[None])
    names = [p.name for p in space.categorical]
    switch = names.index("osc_1_on")
    volume = [p.name for p in space.continuous].index("volume")
    true_volume = float(sample.patch.continuous[volume])
    assert sample.patch.categorical[switch] == 1 and true_volume > 0.5
    mu = torch.tensor(sample.patch.continuous, dtype=torch.float32)[None].clone()
    mu[0, volume] = true_volume - 0.3
    logits = torch.zeros((1, layout.offsets[-1]))
    for i, cls in enumerate(sample.patch.categorical):
        if i != switch:
            logits[0, layout.offsets[i] + int(cls)] = 6.0
    mu.requires_grad_(True)
    logits.requires_grad_(True)
    sound = SoundObjective(space, layout, frontend, SHORT, SoundConfig(weight=1.0, samples=4,
                                                                       render_threads=2))
    opt = torch.optim.Adam([mu, logits], lr=0.05)
    for _ in range(15):
        terms = sound(Outputs(mu, logits, torch.zeros(1, 128)), clip,
                      torch.tensor([sample.note]))
        opt.zero_grad()
        terms["loss/sound"].backward()
        opt.step()
    sound.close()
    p_on = float(torch.softmax(layout.logits(logits.detach(), switch), 1)[0, 1])
    assert p_on > 0.7, p_on  # from 0.5; Adam at this rate can reach about 0.82
    volume_now = float(mu.detach()[0, volume])
    assert abs(volume_now - true_volume) < 0.1, (volume_now, true_volume)


@pytest.mark.parametrize("bad", [{"weight": -1.0}, {"samples": 1}, {"sigma": 0.0},
                                 {"render_threads": 0}])
def test_bad_sound_config_is_refused_by_name(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        SoundConfig(**bad)
