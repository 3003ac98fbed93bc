"""MBR decoding of categorical parameters: cost matrices from real renders, the decision
rule, the file beside a checkpoint, and the Matcher using it."""

import shutil

import numpy as np
import pytest

from model.checkpoint import save_checkpoint
from model.decoding import FILENAME, ClassCosts, mbr, measure
from model.features import FeatureConfig
from model.loss import LossConfig
from model.match import DEFAULT_CHECKPOINT, Matcher
from model.network import MatchNet, ModelConfig
from synth import Renderer, Sampler, SamplerConfig, SpaceError, get_space

NAMES = ("osc_1_on", "osc_1_distortion_type")


@pytest.fixture(scope="module")
def costs():
    return measure(get_space("core"), FeatureConfig(), presets=2, names=NAMES)


def test_costs_are_measured_from_renders(costs):
    assert set(costs.costs) == set(NAMES)
    for name in NAMES:
        c = costs.costs[name]
        k = next(p.num_classes for p in get_space("core").categorical if p.name == name)
        assert c.shape == (k, k)
        assert np.allclose(c, c.T) and np.allclose(np.diag(c), 0.0)
        assert np.all(c[~np.eye(k, dtype=bool)] > 0)  # every other class sounds different
    # distortion types differ in how far they move the sound: not a constant matrix
    d = costs.costs["osc_1_distortion_type"]
    assert d[~np.eye(len(d), dtype=bool)].std() > 0.05 * d.mean()


def test_mbr_is_the_argmax_when_sure_and_the_least_risky_class_when_not(costs):
    c = costs.costs["osc_1_distortion_type"]
    k = len(c)
    sure = np.full((1, k), 0.01 / (k - 1))
    sure[0, 3] = 0.99
    assert mbr(sure, c)[0] == 3
    flat = np.full((1, k), 1.0 / k)
    assert mbr(flat, c)[0] == np.argmin(c.sum(0))
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(k, 0.5), size=200)
    chosen = mbr(probs, c)
    risk = probs @ c
    assert np.all(risk[np.arange(200), chosen] <= risk.min(1) + 1e-12)
    assert np.array_equal(mbr(probs, None), probs.argmax(1))


def test_costs_file_round_trip_and_bad_files(costs, tmp_path):
    path = tmp_path / FILENAME
    costs.save(path)
    back = ClassCosts.load(path, get_space("core"))
    assert set(back.costs) == set(NAMES)
    assert np.allclose(back.costs["osc_1_on"], costs.costs["osc_1_on"], atol=1e-4)
    bad = ClassCosts("core-0000000000000000", 1, costs.costs)
    bad.save(path)
    with pytest.raises(SpaceError):
        ClassCosts.load(path, get_space("core"))
    ClassCosts(costs.space_id, 1, {"osc_1_on": np.zeros((3, 3))}).save(path)
    with pytest.raises(ValueError, match="osc_1_on costs have shape"):
        ClassCosts.load(path, get_space("core"))
    for text in ("not json", '{"space_id": "x"}', "[1, 2]"):
        path.write_text(text)
        with pytest.raises(ValueError, match="not a class costs file"):
            ClassCosts.load(path, get_space("core"))


def test_the_matcher_decodes_with_the_costs_beside_its_checkpoint(costs, tmp_path):
    import torch

    space, features, cfg = get_space("core"), FeatureConfig(), ModelConfig(channels=(8, 16),
                                                                           hidden=32)
    torch.manual_seed(0)  # an untrained network, the same in every run
    path = save_checkpoint(tmp_path / "model.pt", MatchNet(space, features, cfg), space,
                           features, cfg, LossConfig(), {"epoch": 0})
    s = Sampler(SamplerConfig(seed=3)).sample(0)
    clip = Renderer(space).render(s.patch, s.note).audio
    plain = Matcher(path).predict([clip])[0]
    # an untrained head is unsure: flat costs would keep the argmax, these move it
    ClassCosts(costs.space_id, 2, {"osc_1_distortion_type":
                                   costs.costs["osc_1_distortion_type"]}).save(
        tmp_path / FILENAME)
    matcher = Matcher(path)
    decoded = matcher.predict([clip])[0]
    i = [p.name for p in space.categorical].index("osc_1_distortion_type")
    others = np.arange(len(space.categorical)) != i
    assert np.array_equal(decoded.patch.categorical[others], plain.patch.categorical[others])
    probs = _class_probs(matcher, clip, i)
    assert decoded.patch.categorical[i] == mbr(probs[None], matcher.class_costs[i])[0]
    assert decoded.patch.categorical[i] != plain.patch.categorical[i]
    # confidence: the chosen class's probability
    c0 = len(space.continuous)
    assert decoded.confidence[c0 + i] == pytest.approx(probs[decoded.patch.categorical[i]])


def _class_probs(matcher, clip, i):
    """The ensemble's mean probabilities of categorical parameter ``i``, recomputed here."""
    import torch

    model, layout = matcher.ckpt.model, matcher.ckpt.model.layout
    with torch.no_grad():
        out = model.heads_ensemble(model.embed(torch.from_numpy(clip[None])), matcher.mc_passes)
        p = torch.softmax(layout.logits(out.categorical, i), 1).mean(0)
    return p.numpy().astype(np.float64)


def test_the_default_model_ships_its_class_costs(tmp_path):
    matcher = Matcher()
    named = [p.name for p, c in zip(matcher.space.categorical, matcher.class_costs,
                                    strict=True) if c is not None]
    assert len(named) == len(matcher.space.categorical) - 2  # all but the two transposes
    assert not any(n.endswith("_transpose") for n in named)
    # and without the file the same checkpoint decodes by argmax
    shutil.copy(DEFAULT_CHECKPOINT, tmp_path / "model.pt")
    assert all(c is None for c in Matcher(tmp_path / "model.pt").class_costs)


def test_any_answer_is_scored_in_parameter_space():
    """``answer_outputs`` lets ``ParamMetrics`` score a retrieved or decoded answer: the
    truth scores perfectly, and one changed class or value is counted."""
    import torch

    from model.loss import Targets
    from model.metrics import ParamMetrics, answer_outputs
    from model.network import SpaceLayout
    from synth.space import Patch

    space = get_space("core")
    layout = SpaceLayout(space)
    samples = Sampler(SamplerConfig(seed=5)).samples(range(4))
    truth = Targets(torch.tensor(np.stack([s.patch.continuous for s in samples])).float(),
                    torch.tensor(np.stack([s.patch.categorical for s in samples])),
                    torch.tensor([s.note for s in samples]))
    perfect = ParamMetrics(layout)
    perfect.update(answer_outputs([s.patch for s in samples], [s.note for s in samples],
                                  layout), truth)
    assert perfect.result()["mae/all"] == pytest.approx(0.0, abs=1e-6)
    assert perfect.result()["acc/categorical"] == 1.0 and perfect.result()["acc/note"] == 1.0
    wrong = [Patch(s.patch.continuous, s.patch.categorical.copy()) for s in samples]
    j = [p.name for p in space.categorical].index("osc_1_distortion_type")
    for p in wrong:
        p.categorical[j] = (p.categorical[j] + 1) % space.categorical[j].num_classes
    off = ParamMetrics(layout)
    off.update(answer_outputs(wrong, [s.note + 1 for s in samples], layout), truth)
    assert off.result()["acc/categorical"] == pytest.approx(1 - 1 / len(space.categorical))
    assert off.result()["acc/note"] == 0.0
