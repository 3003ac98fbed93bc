"""The sound objective (model.sound) on real vita renders, without Ray."""

import numpy as np
import pytest
import torch

from model.features import FeatureConfig, LogMel
from model.network import MatchNet, ModelConfig, Outputs
from model.sound import SoundConfig, SoundObjective
from synth import RenderConfig, Renderer, get_space
from synth.config import ConfigError
from synth.sampling import Sampler
from synth.space import Patch

SHORT = RenderConfig(note_dur=0.5, render_dur=0.75)
FEATURES = FeatureConfig(duration_s=0.75, n_mels=32, n_fft=1024, hop=512)


def test_following_the_sound_loss_moves_a_patch_towards_the_clip():
    """Gradient steps on the sound loss alone, from a uniform guess, bring the guess's own
    render closer to the clip: the loss rewards the draws that sound closer, not the
    others."""
    torch.manual_seed(0)
    space = get_space("core")
    layout = MatchNet(space, FEATURES, ModelConfig(channels=(8,), hidden=8)).layout
    sample = Sampler().sample(1)  # a loud one (RMS 0.11)
    renderer = Renderer(space, SHORT)
    frontend = LogMel(FEATURES)
    clip = frontend(torch.from_numpy(renderer.render(sample.patch, sample.note).audio[None]))
    notes = torch.tensor([sample.note])
    # the policy's outputs themselves are the parameters learned
    mu = torch.full((1, layout.num_continuous), 0.5, requires_grad=True)
    logits = torch.zeros((1, layout.offsets[-1]), requires_grad=True)
    sound = SoundObjective(space, layout, frontend, SHORT, SoundConfig(weight=1.0, samples=8,
                                                                       render_threads=2))
    opt = torch.optim.Adam([mu, logits], lr=0.05)

    def distance() -> float:  # the guess itself: mean values, most probable classes
        classes = np.array([int(layout.logits(logits.detach(), i).argmax())
                            for i in range(len(layout.classes))])
        audio = renderer.render(Patch(mu.detach()[0].double().numpy(), classes), sample.note)
        return float((frontend(torch.from_numpy(audio.audio[None])) - clip).abs().mean())

    before = distance()
    for _ in range(40):
        terms = sound(Outputs(mu.clamp(0, 1), logits, torch.zeros(1, 128)), clip, notes)
        opt.zero_grad()
        terms["loss/sound"].backward()
        opt.step()
        with torch.no_grad():
            mu.clamp_(0.0, 1.0)
    sound.close()
    after = distance()
    assert after < 0.85 * before, (before, after)


@pytest.mark.parametrize("bad", [{"weight": -1.0}, {"samples": 1}, {"sigma": 0.0},
                                 {"render_threads": 0}])
def test_bad_sound_config_is_refused_by_name(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        SoundConfig(**bad)
