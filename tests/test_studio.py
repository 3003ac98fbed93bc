"""The studio scope: its prior counted from the real presets, its wavetable bank, its draws,
import and export."""

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
from synth.bank import BankError
from synth.lfo_shapes import (
    LFO_BANK_PATH,
    LfoShapeBank,
    get_lfo_bank,
    line_shape,
    shape_curve,
)
from synth.preset import dropped_routes
from synth.prior import PRIOR_PATH, VOCABULARY_SIZE, count, smoothed, studio_prior
from synth.wavetables import (
    BANK_PATH,
    Spectrum,
    WavetableBank,
    fingerprint,
    fingerprint_distance,
    get_bank,
    procedural_table,
    sound_digest,
)


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


def _written_by(command: str, real_presets, tmp_path, *out: str) -> dict:
    """What ``python -m synth COMMAND --presets <real presets>`` writes, by file name."""
    target = ["--out-dir", str(tmp_path)] if command == "bank" else ["-o", str(tmp_path / out[0])]
    done = subprocess.run([sys.executable, "-m", "synth", command, "--presets",
                           str(real_presets[0].parent), *target],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {name: json.loads((tmp_path / name).read_text()) for name in out}


def test_the_prior_command_writes_the_same_file(real_presets, tmp_path):
    written = _written_by("prior", real_presets, tmp_path, "prior.json")["prior.json"]
    assert written == json.loads(PRIOR_PATH.read_text())


def test_the_studio_space_and_its_table():
    space = get_space("studio")
    modules = {p.module for p in space.params}
    assert {"osc_3", "filter_2", "sample", "env_3", "lfo_2", "reverb", "chorus", "delay",
            "distortion", "eq", "compressor", "flanger", "phaser", "filter_fx"} <= modules
    # the routes real presets use most, then core's that are not among them
    common = [(v["source"], v["destination"]) for v in studio_prior()["vocabulary"]]
    routes = [(r.source, r.destination) for r in space.routes]
    assert routes[:VOCABULARY_SIZE] == common
    assert routes[VOCABULARY_SIZE:] == [("lfo_1", "osc_1_wave_frame")]
    out = subprocess.run([sys.executable, "-m", "synth", "space", "--scope", "studio"],
                         capture_output=True, text=True, check=True).stdout
    n = len(space.params)
    assert f"= {n} parameters ({len(routes)} of them modulation routes)" in out
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
    counted = {(r["source"], r["destination"]): r["presets"] for r in prior["routes"]}
    expected = [smoothed(counted[(r.source, r.destination)] / prior["presets"],
                         prior["presets"]) for r in space.routes]
    assert np.abs(used - expected).max() < 0.07
    synced = [k for k in space.index if k.endswith("_sync")]
    assert {"lfo_1_sync", "lfo_2_sync", "delay_sync", "chorus_sync"} <= set(synced)
    assert all(r[k] == 0.0 for r in raws for k in synced)


def test_uniform_studio_draws_keep_something_to_play():
    """Two ways a uniform studio draw fell silent: the EQ's high pass over its low pass, and
    a spectral morph that takes harmonics away from a sine. Neither is drawn now; the bank
    knows which of its tables are sines (and where, for the basic shapes)."""
    bank = get_bank()
    assert bank.sine_like(1, 0) and bank.sine_like(1, 40)  # basic shapes: the sine end
    assert not bank.sine_like(1, 256) and not bank.sine_like(0, 0)  # its square; the init saw
    assert bank.sine_like(bank.labels.index("GPLSine (IceRain.vital)"), 200)
    sampler = Sampler(SamplerConfig(scope="studio", seed=5))
    space = sampler.space
    both_pass = sines = 0
    for i in range(600):
        s = sampler.sample(i)
        raw = space.raw_from_patch(s.patch)
        if raw["eq_low_mode"] == 1.0:
            assert raw["eq_low_cutoff"] <= s.note + 36
        if raw["eq_high_mode"] == 1.0:
            assert raw["eq_high_cutoff"] >= s.note - 12
        if raw["eq_low_mode"] == raw["eq_high_mode"] == 1.0:
            both_pass += 1
            assert raw["eq_high_cutoff"] >= raw["eq_low_cutoff"]
        for n in (1, 2, 3):
            p = f"osc_{n}_"
            if bank.sine_like(int(raw[p + "wavetable"]), raw[p + "wave_frame"]):
                sines += 1
                assert raw[p + "spectral_morph_type"] not in (1, 2, 5, 6, 8), (i, n)
    assert both_pass > 50 and sines > 100  # both rules were put to the test


def test_a_core_patch_plays_the_same_carried_into_studio():
    """Studio holds every core parameter, core's routes included, so a core patch carried
    into studio as any preset is (written onto the base preset and imported: a core
    network's answer beside a studio library, a core answer given effects) keeps every value
    and plays the same. Before, the LFO 1 -> oscillator 1 frame route was lost, and a core
    patch that moved its wavetable played without the movement."""
    from model.metrics import mrstft_distance

    core, studio = get_space("core"), get_space("studio")
    assert {p.name for p in core.params} <= set(studio.index)
    # the base preset's sine, swept through the basic shapes by LFO 1
    route = "mod_lfo_1_to_osc_1_wave_frame"
    raw = core.default_raw() | {route: 0.8}
    patch = core.patch_from_raw(raw)
    lifted = import_preset(apply_patch(base_preset(), core, patch), studio, warn=False)
    carried = studio.raw_from_patch(lifted)
    for name, value in raw.items():
        assert carried[name] == pytest.approx(value, abs=1e-4), name
    a, b = Renderer(core), Renderer(studio)
    here, again = a.render(patch, 60).audio, a.render(patch, 60).audio
    there = b.render(lifted, 60).audio
    still = b.render(studio.patch_from_raw(carried | {route: 0.0}), 60).audio
    floor = mrstft_distance(again, here)
    # the same sound within the render noise; without the route, audibly another
    assert mrstft_distance(there, here) < floor + 0.1
    assert mrstft_distance(still, here) > floor + 0.4


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


# --- the wavetable bank -------------------------------------------------------------------
def _spectrum_db(audio: np.ndarray) -> np.ndarray:
    """Mean magnitude spectrum of a render, in dB: compares sounds, not waveforms (Vital's
    oscillators start at a random phase)."""
    frames = np.lib.stride_tricks.sliding_window_view(audio, 4096)[::2048] * np.hanning(4096)
    return 20 * np.log10(np.abs(np.fft.rfft(frames, axis=1)).mean(axis=0) + 1e-7)


def test_the_shipped_banks_are_what_the_bank_command_writes(real_presets, tmp_path):
    written = _written_by("bank", real_presets, tmp_path, BANK_PATH.name, LFO_BANK_PATH.name)
    assert written == {path.name: json.loads(path.read_text())
                       for path in (BANK_PATH, LFO_BANK_PATH)}
    for bank, built_in in ((get_bank(), 34), (get_lfo_bank(), 7)):
        kinds = [e.kind for e in bank.entries]
        assert len(kinds) - kinds.count("harvested") == built_in
        assert kinds.count("harvested") > 10 and "CC BY 4.0" in bank.credit
        # every harvested table is read from its preset and is what the manifest names
        tables = bank.resolved()
        assert sorted(tables) == [e.index for e in bank.entries if e.kind == "harvested"]
        digests = {bank.digest(bank.table(i)) for i in range(len(bank))}
        assert len(digests) == len(bank)  # no table twice
    assert [e.kind for e in get_bank().entries].count("procedural") == 32


def test_a_harvested_table_without_its_presets_folder_is_a_clear_error(tmp_path):
    bank = WavetableBank(get_bank().manifest, presets=tmp_path)
    harvested = next(e for e in bank.entries if e.kind == "harvested")
    assert bank.table(0)["name"] == "Init"  # built in code: needs no folder
    with pytest.raises(BankError, match=f"{harvested.sources[0]['preset']}.*SYNTHMATCH_PRESETS"):
        bank.table(harvested.index)
    # what an answer plays instead (Matcher): each harvested table's built-in stand-in
    for b in (bank, LfoShapeBank(get_lfo_bank().manifest, presets=tmp_path)):
        gone = b.unreadable()
        assert gone == {e.index for e in b.entries if e.kind == "harvested"}
        assert {b.entries[b.stand_in(i)].kind for i in gone} <= {"basic", "procedural"}
    assert get_bank().unreadable() == get_lfo_bank().unreadable() == frozenset()
    old = WavetableBank({k: v for k, v in get_bank().manifest.items() if k != "stand_ins"},
                        presets=tmp_path)
    assert old.id == get_bank().id  # the stand-ins are not part of the bank's identity
    with pytest.raises(BankError, match="no built-in stand-ins.*python -m synth bank"):
        old.stand_in(harvested.index)


def test_a_bank_manifest_without_harmonic_counts_is_a_clear_error():
    manifest = {k: v for k, v in get_bank().manifest.items() if k != "harmonics"}
    bank = WavetableBank(manifest)
    assert bank.id == get_bank().id  # the counts are not part of the bank's identity
    with pytest.raises(BankError, match="no harmonic counts.*python -m synth bank"):
        bank.sine_like(0, 0.0)


def test_a_procedural_table_plays_the_harmonics_its_numbers_give():
    # slope 1, every harmonic, no formant, no comb: a saw, harmonic k at -20 log10(k) dB
    saw = Spectrum(slope=1.0, even=1.0, formant=4.0, width=1.0, boost_db=0.0, pulse=0.5,
                   comb=0.0)
    # slope 1 with the even harmonics off: a square's odd series
    square = Spectrum(slope=1.0, even=0.0, formant=4.0, width=1.0, boost_db=0.0, pulse=0.5,
                      comb=0.0)
    prints = fingerprint(json.dumps(procedural_table("test", saw, square)))
    k = np.arange(1, 13)
    np.testing.assert_allclose(prints[0, :12], -20 * np.log10(k), atol=1.0)  # first frame
    odd = k % 2 == 1
    np.testing.assert_allclose(prints[-1, :12][odd], -20 * np.log10(k[odd]), atol=1.0)
    assert np.all(prints[-1, :12][~odd] < -40)  # last frame: even harmonics gone


def test_import_takes_the_presets_own_table_or_else_the_nearest(real_presets):
    from synth import load_preset

    space, bank = get_space("studio"), get_bank()
    preset = load_preset(next(p for p in real_presets if p.stem == "IceRain"))
    own = {n: bank.find(t) for n, t in enumerate(preset.settings["wavetables"], start=1)}
    assert all(i is not None and bank.entries[i].kind == "harvested" for i in own.values())
    assert space.wavetables(import_preset(preset, space)) == own
    left_out = bank.left_out(preset.digest)
    assert left_out and left_out <= set(own.values())
    loo = space.wavetables(import_preset(preset, space, leave_out=True))
    assert not set(loo.values()) & left_out
    assert all(loo[n] == own[n] for n in own if own[n] not in left_out)
    # a procedural table's nearest (itself excluded) is not far from it; itself, it is found
    target = bank.table(5)
    assert bank.nearest(target) == 5
    near = bank.nearest(target, exclude=frozenset({5}))
    a, b = fingerprint(json.dumps(target)), fingerprint(json.dumps(bank.table(near)))
    far = max(fingerprint_distance(a, fingerprint(json.dumps(bank.table(i))))
              for i in range(len(bank)) if i != 5)
    assert fingerprint_distance(a, b) < 0.5 * far


def test_a_presets_own_tables_are_left_out_of_an_answer_as_import_leaves_them(real_presets):
    """Measuring a matcher on a real preset: a patch may not use the tables the banks hold
    only because that preset gave them; each goes to the table a leave-one-out import of it
    takes, and nothing else changes."""
    from synth import load_preset

    space, bank = get_space("studio"), get_bank()
    preset = load_preset(next(p for p in real_presets if p.stem == "IceRain"))
    lookups = space.left_out_classes(preset.digest)
    gone = bank.left_out(preset.digest)
    columns = {space.categorical[c].name for c in lookups}
    assert columns >= {"osc_1_wavetable", "osc_2_wavetable", "osc_3_wavetable"}
    own = space.wavetables(import_preset(preset, space))
    loo = space.wavetables(import_preset(preset, space, leave_out=True))
    uses = space.default_patch()
    k = len(space.continuous)
    for slot, cls in own.items():  # the preset's own tables, then left out
        uses.categorical[space.index[f"osc_{slot}_wavetable"] - k] = cls
    answer = space.with_classes(uses, lookups)
    assert space.wavetables(answer) == loo
    assert not set(space.wavetables(answer).values()) & gone
    changed = np.flatnonzero(answer.categorical != uses.categorical)
    assert {space.categorical[c].name for c in changed} <= columns
    np.testing.assert_array_equal(answer.continuous, uses.continuous)
    # a preset that gave the banks nothing, and a scope without banks: nothing left out
    shared = load_preset(next(p for p in real_presets if p.stem == "UmbraLead"))
    assert space.left_out_classes(shared.digest) == {}
    assert get_space("core").left_out_classes(preset.digest) == {}


def test_an_exported_studio_patch_plays_its_procedural_and_harvested_tables():
    space, bank = get_space("studio"), get_bank()
    sampler = Sampler(SamplerConfig(scope="studio", seed=11))
    renderer = Renderer(space)
    procedural = next(e.index for e in bank.entries if e.kind == "procedural")
    harvested = next(e.index for e in bank.entries
                     if e.kind == "harvested" and e.name == "GPLSquare")
    raw = space.raw_from_patch(sampler.sample(0).patch)
    for effect in ("chorus", "compressor", "delay", "distortion", "eq", "filter_fx",
                   "flanger", "phaser", "reverb"):
        raw[f"{effect}_on"] = 0.0
    for route in space.routes:
        raw[route.name] = 0.0
    raw.update({"osc_1_on": 1.0, "osc_2_on": 1.0, "osc_3_on": 0.0, "sample_on": 0.0,
                "filter_1_on": 0.0, "filter_2_on": 0.0, "osc_1_wavetable": procedural,
                "osc_2_wavetable": harvested, "osc_1_transpose": 0.0, "osc_2_transpose": 12.0})
    patch = space.patch_from_raw(raw)
    preset = apply_patch(base_preset(), space, patch, name="tables")
    tables = preset.settings["wavetables"]
    assert sound_digest(tables[0]) == bank.entries[procedural].digest
    assert sound_digest(tables[1]) == bank.entries[harvested].digest

    loaded = parse_preset(preset.to_json(), source="tables.vital")  # as vita reads the file
    patched = _spectrum_db(renderer.render(patch, 48).audio)
    exported = _spectrum_db(renderer.render_preset(loaded, 48).audio)
    other = raw | {"osc_1_wavetable": bank.index("Basic Shapes"), "osc_2_wavetable": 0}
    elsewhere = _spectrum_db(renderer.render(space.patch_from_raw(other), 48).audio)
    same, differ = np.abs(patched - exported).mean(), np.abs(patched - elsewhere).mean()
    assert same < 1.0 < differ and same < differ / 4


def test_tempo_synced_rates_import_as_the_free_rates_they_play():
    space = get_space("studio")
    data = base_preset().data
    settings = data["settings"]
    # 90 BPM (Vital stores beats per second); LFO 1 at 1/4 (one cycle per beat), dotted;
    # the delay at 1/8 (two per beat), triplets; LFO 2 frozen
    settings.update({"beats_per_minute": 1.5, "lfo_1_sync": 2.0, "lfo_1_tempo": 8.0,
                     "delay_sync": 3.0, "delay_tempo": 9.0, "lfo_2_sync": 1.0,
                     "lfo_2_tempo": 0.0})
    preset = parse_preset(json.dumps(data), source="synced", name="synced")
    raw = space.raw_from_patch(import_preset(preset, space))
    assert raw["lfo_1_sync"] == raw["delay_sync"] == raw["lfo_2_sync"] == 0.0  # "Seconds"
    assert 2.0 ** raw["lfo_1_frequency"] == pytest.approx(1.5 * 2 / 3, rel=1e-4)
    assert 2.0 ** raw["delay_frequency"] == pytest.approx(2 * 1.5 * 3 / 2, rel=1e-4)
    assert raw["lfo_2_frequency"] == space.params[space.index["lfo_2_frequency"]].lo
    # core keeps its import as it always was (its datasets' perturbed rows depend on it)
    core = get_space("core")
    assert core.raw_from_patch(import_preset(preset, core))["lfo_1_frequency"] == \
        settings["lfo_1_frequency"]


def test_routes_from_constant_sources_fold_into_the_values_they_set():
    """A macro (at its saved value) or the velocity (at the one synthmatch matches at) routed
    outside the vocabulary is a moved knob: import folds it into the value it sets, and the
    import plays like the preset; a curved connection is dropped and named."""
    from synth.audio import log_mel_distance
    from synth.preset import MATCH_VELOCITY, connect_route, route_slot

    space = get_space("studio")
    data = base_preset().data
    s = data["settings"]
    s.update({"filter_1_on": 1.0, "filter_1_cutoff": 40.0, "macro_control_1": 0.5,
              "macro_control_2": 1.0})
    env = route_slot(s, "env_2", "filter_1_cutoff")
    s[f"modulation_{env}_amount"] = 0.0
    up = connect_route(s, "macro_control_1", "osc_1_transpose", "test")
    s[f"modulation_{up}_amount"] = 0.25  # 0.25 * 0.5 * 96 semitones: an octave up
    vel = connect_route(s, "velocity", f"modulation_{env}_amount", "test")
    s[f"modulation_{vel}_amount"] = 0.25  # 0.25 * 0.8 * 2: the envelope opens the filter
    idle = connect_route(s, "mod_wheel", "portamento_time", "test")  # the wheel rests at 0
    s[f"modulation_{idle}_amount"] = 0.5
    preset = parse_preset(json.dumps(data), source="folded", name="folded")
    raw = space.raw_from_patch(import_preset(preset, space))
    assert raw["osc_1_transpose"] == pytest.approx(12.0, abs=1e-4)
    assert raw["mod_env_2_to_filter_1_cutoff"] == pytest.approx(0.25 * MATCH_VELOCITY * 2)
    assert dropped_routes(preset, space) == []

    renderer = Renderer(space)
    own = [renderer.render_preset(preset, 60).audio for _ in range(2)]
    folded = renderer.render_preset(apply_patch(base_preset(), space,
                                                import_preset(preset, space)), 60).audio
    unfolded = json.loads(json.dumps(data))
    for slot in (up, vel):
        unfolded["settings"][f"modulation_{slot}_amount"] = 0.0
    unfolded = parse_preset(json.dumps(unfolded), source="unfolded", name="unfolded")
    lost = renderer.render_preset(apply_patch(base_preset(), space,
                                              import_preset(unfolded, space)), 60).audio
    floor = log_mel_distance(own[0], own[1], 44100)
    assert log_mel_distance(folded, own[0], 44100) <= 1.5 * floor + 0.1
    assert log_mel_distance(lost, own[0], 44100) > 3 * (1.5 * floor + 0.1)

    # a curved connection is not a plain sum: it is dropped, and named
    curved = connect_route(s, "macro_control_2", "osc_1_level", "test")
    s.update({f"modulation_{curved}_amount": -0.3, f"modulation_{curved}_power": 2.0})
    preset = parse_preset(json.dumps(data), source="curved", name="curved")
    assert dropped_routes(preset, space) == ["macro_control_2 -> osc_1_level"]
    assert space.raw_from_patch(import_preset(preset, space))["osc_1_level"] == \
        pytest.approx(s["osc_1_level"])


def test_perturbed_seed_presets_move_their_effects_and_routes(real_presets):
    from synth import load_preset

    seeds = [p for p in real_presets if p.stem in ("Desolate", "JX300P")]
    sampler = Sampler(SamplerConfig(scope="studio", seed=2, seed_presets=tuple(seeds),
                                    perturb_fraction=1.0))
    space = sampler.space
    own = {p.stem: space.raw_from_patch(import_preset(load_preset(p), space)) for p in seeds}
    switches = [f"{e}_on" for e in ("chorus", "delay", "reverb", "eq", "distortion")]
    moved_switch = moved_route = 0
    for i in range(40):
        s = sampler.sample(i)
        raw, seed = space.raw_from_patch(s.patch), own[s.base]
        moved_switch += any(raw[k] != seed[k] for k in switches)
        moved_route += any(abs(raw[r.name] - seed[r.name]) > 1e-3 for r in space.routes)
    assert moved_switch >= 5 and moved_route >= 30


# --- the LFO shape bank -------------------------------------------------------------------
def test_lfo_shapes_are_compared_by_the_curve_vital_draws():
    x = (np.arange(64) + 0.5) / 64
    ramp = line_shape("up", [(0.0, 1.0), (1.0, 0.0)], [0.0, 0.0], False)
    np.testing.assert_allclose(shape_curve(ramp), x)  # y = 0 is the top in Vital
    square = line_shape("sq", [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (1.0, 1.0)], [0.0] * 4,
                        False)
    np.testing.assert_allclose(shape_curve(square), np.where(x < 0.5, 1.0, 0.0))
    bent = line_shape("bent", [(0.0, 1.0), (1.0, 0.0)], [4.0, 0.0], False)
    np.testing.assert_allclose(shape_curve(bent), np.expm1(4 * x) / np.expm1(4.0))
    lfo = get_lfo_bank()
    triangle = shape_curve(lfo.table(lfo.index("Triangle")))
    np.testing.assert_allclose(triangle, 1 - np.abs(1 - 2 * x), atol=1e-12)


def test_studio_lfos_choose_a_shape_that_imports_exports_and_plays(real_presets):
    from synth import load_preset

    space, lfo = get_space("studio"), get_lfo_bank()
    assert {"lfo_1_shape", "lfo_2_shape"} <= set(space.index)
    preset = load_preset(next(p for p in real_presets if p.stem == "WorldOneIntro"))
    own = lfo.find(preset.settings["lfos"][0])
    assert own is not None and lfo.entries[own].kind == "harvested"
    patch = import_preset(preset, space)
    assert space.choices(patch)[("lfos", 1)] == own
    loo = space.choices(import_preset(preset, space, leave_out=True))[("lfos", 1)]
    assert loo != own and loo not in lfo.left_out(preset.digest)
    exported = apply_patch(base_preset(), space, patch)
    assert lfo.digest(exported.settings["lfos"][0]) == lfo.entries[own].digest
    # uniform draws use every kind of shape
    sampler = Sampler(SamplerConfig(scope="studio", seed=4))
    drawn = {space.choices(sampler.sample(i).patch)[("lfos", 1)] for i in range(200)}
    assert len(drawn) > 20
    # a ramp and a square on LFO 1 driving oscillator 1's level play differently
    raw = space.raw_from_patch(patch)
    raw.update({"mod_lfo_1_to_osc_1_level": 1.0, "osc_1_on": 1.0, "lfo_1_frequency": 1.0})
    renderer = Renderer(space)
    levels = []
    for shape in ("Ramp Up", "Square"):
        raw["lfo_1_shape"] = float(lfo.index(shape))
        audio = renderer.render(space.patch_from_raw(raw), 60).audio
        levels.append(np.sqrt(np.mean(audio[: len(audio) // 2].reshape(20, -1) ** 2, axis=1)))
    assert np.abs(np.log(levels[0] + 1e-6) - np.log(levels[1] + 1e-6)).max() > 0.5
