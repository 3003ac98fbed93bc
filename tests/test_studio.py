"""The studio scope: its prior counted from the real presets, its draws, import and export."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from synth import (
    Renderer,
    Sampler,
    SamplerConfig,
    apply_patch,
    base_preset,
    get_space,
    import_preset,
    parse_preset,
)
from synth.preset import dropped_routes
from synth.prior import PRIOR_PATH, VOCABULARY_SIZE, count, smoothed, studio_prior


def test_the_shipped_prior_is_the_count_of_the_real_presets(real_presets):
    shipped = studio_prior()
    recount = count(real_presets, shipped["credit"])
    assert recount == shipped  # sha256 of every preset included: provenance, not a copy
    assert shipped["presets"] == 30 and "CC BY 4.0" in shipped["credit"]
    assert len(shipped["vocabulary"]) == VOCABULARY_SIZE
    # most presets use reverb, few use every effect
    assert shipped["effects_on"]["reverb"] > 0.5 > shipped["effects_on"]["phaser"]
    counts = [r["presets"] for r in shipped["routes"]]
    assert counts == sorted(counts, reverse=True)


def test_the_prior_command_writes_the_same_file(real_presets, tmp_path):
    out = tmp_path / "prior.json"
    done = subprocess.run([sys.executable, "-m", "synth", "prior", "--presets",
                           str(real_presets[0].parent), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == json.loads(PRIOR_PATH.read_text())


def test_the_studio_space_and_its_table():
    space = get_space("studio")
    modules = {p.module for p in space.params}
    assert {"osc_3", "filter_2", "sample", "env_3", "lfo_2", "reverb", "chorus", "delay",
            "distortion", "eq", "compressor", "flanger", "phaser", "filter_fx"} <= modules
    assert len(space.routes) == VOCABULARY_SIZE
    assert [(r.source, r.destination) for r in space.routes] == [
        (v["source"], v["destination"]) for v in studio_prior()["vocabulary"]]
    out = subprocess.run([sys.executable, "-m", "synth", "space", "--scope", "studio"],
                         capture_output=True, text=True, check=True).stdout
    n = len(space.params)
    assert f"= {n} parameters ({VOCABULARY_SIZE} of them modulation routes)" in out
    assert "reverb_dry_wet" in out and "osc_3_level" in out


def test_uniform_studio_draws_follow_the_real_presets_rates():
    sampler = Sampler(SamplerConfig(scope="studio", seed=3))
    space, prior = sampler.space, studio_prior()
    raws = [space.raw_from_patch(sampler.sample(i).patch) for i in range(600)]
    for effect in ("reverb", "chorus", "phaser", "flanger"):
        rate = np.mean([r[f"{effect}_on"] for r in raws])
        expected = smoothed(prior["effects_on"][effect], prior["presets"])
        assert rate == pytest.approx(expected, abs=0.06), effect
    used = np.mean([[r[route.name] != 0.0 for route in space.routes] for r in raws], axis=0)
    expected = [smoothed(v["rate"], prior["presets"]) for v in prior["vocabulary"]]
    assert np.abs(used - expected).max() < 0.07
    assert all(r["lfo_1_sync"] == 0.0 and r["lfo_2_sync"] == 0.0 for r in raws)


def test_a_studio_patch_exports_and_reimports_as_it_was():
    sampler = Sampler(SamplerConfig(scope="studio", seed=5))
    space = sampler.space
    renderer = Renderer(space)
    for i in range(3):
        s = sampler.sample(i)
        preset = apply_patch(base_preset(), space, s.patch)
        again = import_preset(preset, space)
        np.testing.assert_allclose(again.continuous, s.patch.continuous, atol=1e-5)
        assert np.array_equal(again.categorical, s.patch.categorical)
        assert np.all(np.isfinite(renderer.render_preset(preset, s.note).audio))


def test_import_into_studio_names_the_routes_it_drops(real_presets, caplog):
    from synth import load_preset

    space = get_space("studio")
    with_dropped = [p for p in map(load_preset, real_presets) if dropped_routes(p, space)]
    assert with_dropped
    # a copy under another name: the warning comes once per preset and process
    preset = parse_preset(json.dumps({**with_dropped[0].data, "comments": "a fresh copy"}),
                          source="copy", name="copy")
    with caplog.at_level(logging.WARNING, logger="synth.preset"):
        import_preset(preset, space)
    assert any(preset.name in r.message and "dropped" in r.message
               and dropped_routes(preset, space)[0] in r.message for r in caplog.records)
