import json
import subprocess
import sys

import numpy as np
import pytest

from synth import Sampler, SamplerConfig
from synth.config import ConfigError

_CHILD = """
import json, sys
from synth import Sampler, SamplerConfig
cfg = SamplerConfig(**json.loads(sys.argv[1]))
out = {}
for i in json.loads(sys.argv[2]):
    s = Sampler(cfg).sample(i)
    out[i] = [s.patch.continuous.tolist(), s.patch.categorical.tolist(), s.note, s.base]
print(json.dumps(out))
"""


def _as_lists(sample):
    return [sample.patch.continuous.tolist(), sample.patch.categorical.tolist(), sample.note,
            sample.base]


def test_same_seed_and_index_give_the_same_vector_in_another_process(real_presets):
    cfg = dict(seed=7, seed_presets=[str(p) for p in real_presets[:3]], perturb_fraction=0.5)
    indices = [0, 1, 17, 123456]
    child = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg), json.dumps(indices)],
                           capture_output=True, text=True, check=True)
    theirs = json.loads(child.stdout)
    sampler = Sampler(SamplerConfig(**cfg))
    for i in reversed(indices):  # another order, another batching
        assert _as_lists(sampler.sample(i)) == theirs[str(i)]
    strategies = {sampler.sample(i).strategy for i in range(40)}
    assert strategies == {"uniform", "perturb"}


def test_samples_differ_across_indices_and_seeds():
    a, b = Sampler(SamplerConfig(seed=0)), Sampler(SamplerConfig(seed=1))
    assert a.sample(0).patch != a.sample(1).patch
    assert a.sample(0).patch != b.sample(0).patch
    notes = [a.sample(i).note for i in range(300)]
    assert min(notes) >= 36 and max(notes) <= 84 and len(set(notes)) > 30


def test_perturbation_stays_near_its_seed(real_presets):
    from synth import import_preset, load_preset

    sampler = Sampler(SamplerConfig(seed_presets=(str(real_presets[0]),), perturb_fraction=1.0,
                                    perturb_sigma=0.05, perturb_redraw=0.0))
    seed = import_preset(load_preset(real_presets[0]), sampler.space)
    s = sampler.sample(3)
    assert s.base == real_presets[0].stem and s.strategy == "perturb"
    assert np.array_equal(s.patch.categorical, seed.categorical)
    diff = np.abs(s.patch.continuous - seed.continuous)
    assert 0 < diff.mean() < 0.06


def test_uniform_samples_respect_audibility_rules():
    sampler = Sampler(SamplerConfig())
    space = sampler.space
    for i in range(200):
        s = sampler.sample(i)
        raw = space.raw_from_patch(s.patch)
        assert raw["osc_1_on"] or raw["osc_2_on"]
        assert raw["osc_1_destination"] <= 4 and raw["osc_2_destination"] <= 4
        assert 24 <= s.note + raw["osc_1_transpose"] <= 96


@pytest.mark.parametrize("bad, message", [
    (dict(note_min=90, note_max=80), "note_min..note_max"),
    (dict(perturb_fraction=0.3), "perturb_fraction = 0.3 is not allowed"),
    (dict(velocity=1.5), "velocity = 1.5"),
    (dict(seed=-1), "seed = -1"),
])
def test_bad_sampler_config_is_refused_by_name(bad, message):
    with pytest.raises(ConfigError, match=message):
        SamplerConfig(**bad)
