import json

import pytest

from synth import (
    PresetError,
    apply_patch,
    get_space,
    import_preset,
    load_preset,
    parse_preset,
    save_preset,
)
from synth.preset import VITAL_RELEASE, raw_values


def test_real_presets_import_and_reexport_unchanged(real_presets, tmp_path):
    space = get_space("full")
    for path in real_presets:
        preset = load_preset(path)
        patch = import_preset(preset, space)
        out = save_preset(apply_patch(preset, space, patch), tmp_path / path.name)
        again = load_preset(out)
        assert raw_values(again, space) == raw_values(preset, space), path.name
        assert import_preset(again, space) == patch
        # outside the scope nothing moved
        before, after = preset.settings, again.settings
        for key in before:
            if key not in space.index and not key.startswith("modulation_"):
                assert after[key] == before[key], (path.name, key)
        assert after["modulations"] == before["modulations"]
        assert again.data["synth_version"] == preset.data["synth_version"]


def test_routes_are_written_into_a_free_slot(real_presets):
    space = get_space("core")
    preset = load_preset(real_presets[0])
    raw = raw_values(preset, space)
    raw["mod_env_2_to_filter_1_cutoff"] = -0.25
    out = apply_patch(preset, space, space.patch_from_raw(raw))
    assert raw_values(out, space)["mod_env_2_to_filter_1_cutoff"] == -0.25
    slots = [m for m in out.settings["modulations"]
             if (m["source"], m["destination"]) == ("env_2", "filter_1_cutoff")]
    assert len(slots) == 1


def test_exported_presets_carry_name_comment_and_a_real_vital_version():
    from synth import base_preset

    space = get_space("core")
    out = apply_patch(base_preset(), space, space.default_patch(), name="x", comments="why")
    assert (out.data["preset_name"], out.data["comments"], out.data["author"]) == (
        "x", "why", "synthmatch")
    assert out.data["synth_version"] == VITAL_RELEASE


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content) if isinstance(content, str) else path.write_bytes(content)
    return path


def test_malformed_json_is_named(tmp_path):
    path = _write(tmp_path, "broken.vital", '{"settings": {"volume": ')
    with pytest.raises(PresetError, match=r"broken\.vital: not valid JSON .*truncated"):
        load_preset(path)


def test_truncated_real_preset_is_named(tmp_path, real_presets):
    data = real_presets[0].read_bytes()
    path = _write(tmp_path, "cut.vital", data[: len(data) // 2])
    with pytest.raises(PresetError, match=r"cut\.vital: not valid JSON"):
        load_preset(path)


def test_missing_file_and_wrong_extension(tmp_path):
    with pytest.raises(PresetError, match=r"absent\.vital: no such file"):
        load_preset(tmp_path / "absent.vital")
    path = _write(tmp_path, "song.wav", "RIFF")
    with pytest.raises(PresetError, match=r"song\.wav: expected a \.vital preset, got a \.wav"):
        load_preset(path)
    with pytest.raises(PresetError, match="empty"):
        load_preset(_write(tmp_path, "empty.vital", ""))


def test_foreign_json_is_named(tmp_path):
    path = _write(tmp_path, "other.vital", json.dumps({"settings": {"foo": 1}}))
    with pytest.raises(PresetError, match=r"other\.vital: not a Vital preset: only 0 of 772"):
        load_preset(path)
    with pytest.raises(PresetError, match="no 'settings' object"):
        parse_preset("[1, 2]", "list.vital")


def test_out_of_range_and_non_numeric_values_are_named(tmp_path, real_presets):
    data = json.loads(real_presets[0].read_text())
    data["settings"]["filter_1_cutoff"] = 999.0
    with pytest.raises(PresetError, match=r"hot\.vital: control filter_1_cutoff = 999\.0 is "
                                          r"outside its range \[8, 136\]"):
        load_preset(_write(tmp_path, "hot.vital", json.dumps(data)))
    data["settings"]["filter_1_cutoff"] = "loud"
    with pytest.raises(PresetError, match="filter_1_cutoff has value 'loud', not a number"):
        load_preset(_write(tmp_path, "text.vital", json.dumps(data)))


def test_save_is_atomic_and_checks_the_extension(tmp_path):
    from synth import base_preset

    with pytest.raises(PresetError, match="must end in .vital"):
        save_preset(base_preset(), tmp_path / "x.json")
    out = save_preset(base_preset(), tmp_path / "sub" / "b.vital")
    assert load_preset(out).settings["lfo_1_sync"] == 0.0
    assert [p.name for p in out.parent.iterdir()] == ["b.vital"]  # no temporary left behind
