import re

import numpy as np
import pytest

from model.metrics import ClipDistance
from synth import Patch, Renderer, SpaceError, get_space, import_preset, load_preset
from synth.controls import discover_controls
from synth.scales import Warp
from synth.scopes import never_learned_reason


def test_discovers_every_vita_control():
    controls = discover_controls()
    assert len(controls) == 772
    c = controls["filter_1_cutoff"]
    assert (c.min, c.max, c.module, c.scale, c.discrete) == (8.0, 136.0, "filter_1", "linear",
                                                             False)
    assert controls["filter_1_model"].options[:2] == ("Analog", "Dirty")
    assert controls["env_1_attack"].units == "secs"


def test_scopes_and_never_learned_controls():
    core, full = get_space("core"), get_space("full")
    assert set(core.index) < set(full.index)
    assert sum(1 for n in discover_controls() if n.startswith("modulation_")) == 320
    for name in ("modulation_7_amount", "osc_1_view_2d", "bypass", "mod_wheel", "polyphony"):
        assert never_learned_reason(name)
        assert name not in full.index
    # every learnable control is in full, plus the routes
    learnable = [n for n in discover_controls() if never_learned_reason(n) is None]
    assert len(full.params) == len(learnable) + len(full.routes)
    assert {"osc_1_wave_frame", "filter_1_cutoff", "env_2_decay", "volume",
            "mod_env_2_to_filter_1_cutoff", "mod_lfo_1_to_osc_1_wave_frame"} <= set(core.index)
    assert "reverb_dry_wet" not in core.index and "reverb_dry_wet" in full.index


def test_mapping_follows_hearing():
    space = get_space("full")
    warps = {p.name: p.warp for p in space.continuous}
    assert warps["volume"] == Warp.DECIBEL
    assert warps["lfo_1_delay_time"] == Warp.LOG_TIME
    assert warps["filter_1_cutoff"] == Warp.LINEAR
    # volume: half way in the unit interval is half way in decibels (-80 .. +6 dB)
    i = [p.name for p in space.continuous].index("volume")
    unit = np.full(len(space.continuous), 0.5)
    raw = space.unit_map.to_raw(unit)[i]
    p = space.continuous[i]
    lo_db, hi_db = np.sqrt(p.lo) - 80, np.sqrt(p.hi) - 80
    assert np.sqrt(raw) - 80 == pytest.approx((lo_db + hi_db) / 2, abs=1e-3)
    # log time: 10 ms sits far above 1 % of the way to 4 s
    j = [q.name for q in space.continuous].index("lfo_1_delay_time")
    raw = np.array([q.default for q in space.continuous])
    raw[j] = 0.01
    assert space.unit_map.to_unit(raw)[j] > 0.1


def _float32_grid(lo: float, hi: float, rng: np.random.Generator, n: int) -> np.ndarray:
    """Random float32 values in range, the range's ends and their neighbours, and
    values spread over every binade near zero (where float precision is finest)."""
    vals = rng.uniform(lo, hi, n).astype(np.float32).astype(np.float64)
    edge = np.array([lo, hi, np.nextafter(np.float32(lo), np.float32(hi)),
                     np.nextafter(np.float32(hi), np.float32(lo))], dtype=np.float64)
    tiny = np.float32(2.0) ** -np.arange(0, 150, 3, dtype=np.float32) * (hi - lo)
    tiny = np.concatenate([tiny, -tiny]).astype(np.float32).astype(np.float64)
    return np.clip(np.concatenate([edge, vals, tiny]), lo, hi)


def test_round_trip_is_exact_for_every_control_in_full(real_presets):
    space = get_space("full")
    rng = np.random.default_rng(0)
    columns = [_float32_grid(p.lo, p.hi, rng, 500) for p in space.continuous]
    raw = space.unit_map.canonical(np.stack(columns, axis=1))  # (N, C): a column a control
    unit = space.unit_map.to_unit(raw)
    assert np.all((unit >= 0) & (unit <= 1))
    back = space.unit_map.to_raw(unit)
    mismatch = np.argwhere(back != raw)
    assert mismatch.size == 0, [(space.continuous[j].name, raw[i, j], back[i, j])
                                for i, j in mismatch[:5]]
    # discrete controls: every option
    for p in space.categorical:
        for k in range(p.num_classes):
            values = {p.name: p.lo + k}
            patch = space.patch_from_raw(values)
            assert space.raw_from_patch(patch)[p.name] == p.lo + k
    # and the values real presets hold
    for path in real_presets:
        preset = load_preset(path)
        patch = import_preset(preset, space)
        back = space.raw_from_patch(patch)
        for name, value in back.items():
            if name in preset.settings:
                assert value == preset.settings[name], (path.name, name)


def test_space_id_is_stable_and_checked():
    core = get_space("core")
    assert core.id.startswith("core-") and core.id == type(core)("core").id
    assert core.id != get_space("full").id
    core.check_id(core.id, "dataset")
    with pytest.raises(SpaceError, match="made in parameter space 'full-"):
        core.check_id(get_space("full").id, "checkpoint")


def test_out_of_range_values_are_refused_by_name():
    space = get_space("core")
    with pytest.raises(SpaceError, match=r"filter_1_cutoff = 500.0 is outside its range"):
        space.patch_from_raw({"filter_1_cutoff": 500.0})
    with pytest.raises(SpaceError, match="osc_1_unison_voices = 2.5 is not one of"):
        space.patch_from_raw({"osc_1_unison_voices": 2.5})
    good = space.default_patch()
    cont = good.continuous.copy()
    cont[3] = 1.3
    with pytest.raises(SpaceError, match=rf"{space.continuous[3].name}: unit value 1.3"):
        space.raw_from_patch(Patch(cont, good.categorical))
    cat = good.categorical.copy()
    cat[0] = 99
    with pytest.raises(SpaceError, match=rf"{space.categorical[0].name}: class 99"):
        space.raw_from_patch(Patch(good.continuous, cat))
    with pytest.raises(SpaceError, match="unknown scope 'nope'"):
        get_space("nope")


def test_pitch_offset_is_the_lowest_sounding_oscillator():
    space = get_space("core")
    raw = {"osc_1_on": 1, "osc_1_transpose": 12, "osc_1_tune": 0.5, "osc_2_on": 1,
           "osc_2_transpose": -12}
    assert space.pitch_offset(space.patch_from_raw(raw)) == pytest.approx(-12.0)
    assert space.pitch_offset(space.patch_from_raw({**raw, "osc_2_on": 0})) == \
        pytest.approx(12.5)
    # an oscillator that ignores the keyboard says nothing about the note
    assert space.pitch_offset(space.patch_from_raw({**raw, "osc_2_midi_track": 0})) == \
        pytest.approx(12.5)
    assert space.pitch_offset(space.patch_from_raw({"osc_1_on": 0, "osc_2_on": 0})) == 0.0


def test_display_texts_are_shown_as_vitals_interface_shows_them():
    from synth.controls import discover_controls, display_text

    c = discover_controls()
    cases = {("env_1_release", "3.919453 secs"): "3.919 secs",
             ("filter_1_cutoff", "-41.939865 semitones"): "-41.93 semitones",
             ("osc_1_unison_voices", "2.000000v"): "2v",
             ("osc_1_transpose", "0.000000"): "0", ("osc_1_transpose", "-12.000000"): "-12",
             ("osc_1_phase", "186.984863"): "186.9", ("volume", "-2.840370dB"): "-2.840dB",
             ("osc_1_tune", "-0.000002"): "0.000", ("filter_1_model", "Formant"): "Formant"}
    for (name, text), shown in cases.items():
        assert display_text(c[name], text) == shown, (name, text)
    # every control of a real synth: at most 5 characters of number (6 with a minus sign)
    import vita

    synth = vita.Synth()
    for param in get_space("full").params:
        if param.control is None:
            continue
        shown = display_text(param.control, synth.get_control_text(param.name))
        number = re.match(r"-?[\d.]*", shown).group()
        assert len(number.lstrip("-")) <= 5 and not number.endswith("."), (param.name, shown)


def test_audible_names_the_knobs_that_cannot_change_the_sound():
    space = get_space("core")
    default = space.default_patch()  # oscillator 1 alone, one voice, no filter, routes at 0
    names = [p.name for p in space.continuous]
    heard = {n for n, a in zip(names, space.audible(default), strict=True) if a}
    assert {"osc_1_level", "osc_1_wave_frame", "env_1_attack", "volume",
            "mod_lfo_1_to_osc_1_wave_frame"} <= heard
    assert not heard & {"osc_2_level", "filter_1_cutoff", "mod_env_2_to_filter_1_cutoff",
                        "env_2_decay", "lfo_1_frequency", "osc_1_unison_detune",
                        "osc_1_distortion_amount", "osc_1_spectral_morph_amount"}
    # a route that sounds makes its source heard; more voices make the unison knobs heard
    raw = space.raw_from_patch(default) | {"mod_lfo_1_to_osc_1_wave_frame": 0.5,
                                           "osc_1_unison_voices": 4.0}
    heard = {n for n, a in zip(names, space.audible(space.patch_from_raw(raw)), strict=True)
             if a}
    assert {"lfo_1_frequency", "osc_1_unison_detune"} <= heard and "env_2_decay" not in heard


def test_moving_every_silent_knob_leaves_the_sound_as_it_was():
    """Rendered: the default patch with every parameter ``audible`` calls silent moved to
    the other end of its range sounds as the patch does (within what rendering it again
    changes); moving one audible knob, the wave frame, does not."""
    space = get_space("core")
    renderer = Renderer(space)
    patch = space.default_patch()
    silent = ~space.audible(patch)
    moved = patch.continuous.copy()
    moved[silent] = np.where(moved[silent] < 0.5, 1.0, 0.0)
    frame = patch.continuous.copy()
    frame[space.index["osc_1_wave_frame"]] = 1.0
    distance = ClipDistance(renderer.render(patch, 60).audio)

    def heard(p: Patch) -> float:
        """The mean distance of 8 renders: one render's moves by 0.05-0.15 (random phase)."""
        return float(np.mean([distance(renderer.render(p, 60).audio) for _ in range(8)]))

    again = heard(patch)
    assert silent.sum() > 30
    assert heard(Patch(moved, patch.categorical)) < again + 0.05
    assert heard(Patch(frame, patch.categorical)) > again + 1.0
