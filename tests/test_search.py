"""The library and the anytime search: real renders, a real (untrained) checkpoint.

The untrained network answers noise-like patches, so a clip the library holds must be found
by retrieval and ranking, not by the network: what these tests check.
"""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from model.features import FeatureConfig, LogMel
from model.level import active_rms_dbfs
from model.library import Library, LibraryError, embed, embed_clips
from model.match import Matcher
from model.search import Candidate
from synth import Renderer, Sampler, SamplerConfig, get_space
from synth.preset import import_preset, load_preset

SR = 44100
FIRST_ID = 1000  # library ids are the dataset ids, not positions


def _library(folder, scope: str, n: int):
    """``n`` audible draws of ``scope`` rendered at their notes, as a library file."""
    space, features = get_space(scope), FeatureConfig()
    sampler, renderer = (Sampler(SamplerConfig(scope=scope, seed=7)),
                         Renderer(space, features.render_config()))
    samples, clips = [], []
    i = 0
    while len(samples) < n:
        s = sampler.sample(i)
        r = renderer.render(s.patch, s.note)
        if r.valid:
            samples.append(s)
            clips.append(r.audio)
        i += 1
    lib = Library.from_clips(space, features, clips, [s.patch for s in samples],
                             [s.note for s in samples],
                             ids=[FIRST_ID + k for k in range(len(samples))],
                             source={"test": f"{n} {scope} draws, seed 7"})
    path = folder / "library.npz"
    lib.save(path)
    return path, samples


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """12 audible core draws rendered at their notes, as a library file."""
    return _library(tmp_path_factory.mktemp("lib"), "core", 12)


def test_a_library_finds_the_sounds_it_holds_at_any_level(library):
    path, samples = library
    lib = Library.load(path)
    space, features = get_space("core"), FeatureConfig()
    assert len(lib) == 12 and lib.header["space_id"] == space.id
    assert lib.embedding.dtype == np.float16 and lib.embedding.shape == (12, 64 * 4 + 32)
    assert list(lib.id) == [FIRST_ID + k for k in range(12)]
    np.testing.assert_allclose(lib.patch(3).continuous, samples[3].patch.continuous, atol=1e-3)
    np.testing.assert_array_equal(lib.patch(3).categorical, samples[3].patch.categorical)
    # a new render of each (another random phase), 20 dB louder or quieter, is found first
    renderer = Renderer(space, features.render_config())
    frontend = LogMel(features)
    frozen = np.zeros((1, features.num_samples), np.float32)
    frozen.flags.writeable = False  # as a Serve replica gets a clip from Ray's object store
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns for every read-only array it wraps
        assert embed(frontend, frozen).shape == (1, 64 * 4 + 32)
    for k, s in enumerate(samples):
        audio = renderer.render(s.patch, s.note).audio * np.float32(10 ** ((-1) ** k))
        query = embed_clips(frontend, [audio])[0]
        idx, dist = lib.nearest(torch.from_numpy(query.astype(np.float32)), 3)
        assert idx[0] == k, (k, idx, dist)
        assert list(dist) == sorted(dist)


def test_a_library_of_another_space_or_file_is_refused(library, tmp_path):
    path, _ = library
    lib = Library.load(path)
    with pytest.raises(LibraryError, match="parameter space"):
        lib.check(get_space("studio"), FeatureConfig(), "lib")
    with pytest.raises(LibraryError, match="features"):
        lib.check(get_space("core"), FeatureConfig(n_mels=32), "lib")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(LibraryError, match="not a synthmatch library"):
        Library.load(bad)


def _clip(samples, k, tmp_path, dbfs: float = -20.0, scope: str = "core"):
    """A new render of library entry ``k`` as a user's WAV file, at ``dbfs``."""
    space, features = get_space(scope), FeatureConfig()
    s = samples[k]
    audio = Renderer(space, features.render_config()).render(s.patch, s.note).audio
    audio = audio * np.float32(10 ** ((dbfs - active_rms_dbfs(audio)) / 20))
    sf.write(tmp_path / "clip.wav", audio, SR)
    return tmp_path / "clip.wav"


def test_the_search_finds_the_library_entry_a_clip_was_made_from(checkpoint, library, tmp_path):
    path, samples = library
    matcher = Matcher(checkpoint, mc_passes=2, library=path)
    clip = _clip(samples, 5, tmp_path)
    alone = matcher.match(clip, budget_seconds=0)
    assert alone.search is None and alone.refinement is None
    found = matcher.match(clip, budget_seconds=3.0)
    s = found.search
    assert s["winner"]["library_id"] == FIRST_ID + 5  # retrieved, or refined from it
    assert s["winner"]["source"] in ("retrieval", "refinement")
    point = s["best_by_source"]["point"]  # None: the untrained network's answer is silent
    assert point is None or s["best_by_source"]["retrieval"] < point
    assert s["rendered"] >= 2 and s["budget_seconds"] == 3.0
    # the reported distance is the preview's: below the untrained network's answer alone
    assert found.distance["audio/mrstft_level_matched"] < alone.distance[
        "audio/mrstft_level_matched"]
    # never worse than the best candidate it rendered (the level-matched distance it ranked
    # by), the one the refinement started from: by the mean of its renders when it was
    # rendered again
    first = min(v for k, v in s["best_by_source"].items() if v is not None and k != "refinement")
    refined = s["refinement"]
    assert s["winner"]["distance"] <= (refined["distance_before"] if refined else first) + 1e-4
    # (the winner's is rounded to 4 places in the report)
    json.dumps(s, allow_nan=False)  # the API answers it as JSON: no inf or NaN
    # a library entry's values are not the network's: no confidences are claimed for them
    assert all(p["confidence"] is None for p in found.params)
    assert all(p["confidence"] is not None for p in alone.params)
    assert f"library entry {FIRST_ID + 5}" in found.preset.data["comments"]
    report = found.report("m.vital")
    assert report["search"] == s and report["refinement"] == s["refinement"]


def test_a_quiet_clip_is_matched_by_its_sound_and_answered_at_a_presets_level(
        checkpoint, library, tmp_path):
    """At -55 dBFS the clip's level says nothing of a preset's: the answer is set to real
    presets' typical level, and the candidates are ranked at the clip's level all the same
    (the level gap would otherwise drown every difference between them)."""
    path, samples = library
    matcher = Matcher(checkpoint, mc_passes=2, library=path)
    found = matcher.match(_clip(samples, 7, tmp_path, dbfs=-55.0), budget_seconds=3.0)
    assert found.level.source == "typical" and found.level.target_dbfs > -30
    assert found.search["winner"]["library_id"] == FIRST_ID + 7
    # as it plays it is far from the quiet clip; at the clip's level it is the sound
    assert found.distance["audio/mrstft_level_matched"] < found.distance["audio/mrstft"]


def test_a_studio_library_makes_a_core_network_answer_in_studio(checkpoint, tmp_path):
    """The library decides the answer's space: a core network's answer is carried into it
    (it keeps its values), and a clip made by a studio patch is answered by that patch."""
    path, samples = _library(tmp_path, "studio", 6)
    matcher = Matcher(checkpoint, mc_passes=2, library=path)
    assert matcher.net_space.name == "core" and matcher.space.name == "studio"
    clip = _clip(samples, 4, tmp_path, scope="studio")
    alone = matcher.match(clip, budget_seconds=0)
    assert len(alone.params) == len(get_space("studio").params)
    shared = {p["name"]: p for p in alone.params if p["confidence"] is not None}
    core_names = {p.name for p in get_space("core").params}
    # the network's confidences for its own parameters, none for the studio-only ones
    assert set(shared) == core_names
    found = matcher.match(clip, budget_seconds=3.0)
    assert found.search["winner"]["library_id"] == FIRST_ID + 4
    assert found.search["winner"]["source"] in ("retrieval", "refinement")
    # the preset plays the studio answer: its wavetables and effects are written into it
    studio = get_space("studio")
    again = import_preset(found.preset, studio)
    np.testing.assert_array_equal(again.categorical, found.patch.categorical)
    np.testing.assert_allclose(again.continuous, found.patch.continuous, atol=1e-6)


def test_measured_on_a_real_preset_no_answer_uses_its_own_tables(checkpoint, real_presets,
                                                                  tmp_path):
    """``benchmarks/real_presets.py`` matches each real preset with the tables the banks
    hold only because of it left out (``Matcher.leaving_out``): a library entry the search
    proposes and the network's answer get the nearest other table instead."""
    path, samples = _library(tmp_path, "studio", 3)
    studio = get_space("studio")
    preset = load_preset(next(p for p in real_presets if p.stem == "IceRain"))
    gone = sorted(studio.banks["wavetables"].left_out(preset.digest))
    column = studio.index["osc_1_wavetable"] - len(studio.continuous)
    lib = Library.load(path)
    lib.categorical[:, column] = gone[0]  # every entry plays one of the preset's tables
    lib.save(path)
    matcher = Matcher(checkpoint, mc_passes=2, library=path)
    wav = _clip(samples, 1, tmp_path, scope="studio")
    clip = matcher.load(wav)
    point = Candidate(matcher.predict([clip.audio])[0].patch, 60, "point")
    search = matcher.searcher()
    assert [c.patch.categorical[column] for c in search.propose(clip.audio, point, None, 3)[1:]
            ] == [gone[0]] * 3
    took = studio.left_out_classes(preset.digest)[column][gone[0]]
    assert took not in gone
    with matcher.leaving_out(preset):
        proposed = search.propose(clip.audio, point, None, 3, matcher.left_out)[1:]
        assert [c.patch.categorical[column] for c in proposed] == [took] * 3
        answer = matcher.match(wav, budget_seconds=0.5)
        assert answer.patch.categorical[column] not in gone
    assert matcher.left_out == {}  # only within
    # the network's answer goes through the same lookups
    size = len(studio.banks["wavetables"])
    other = (int(matcher.predict([clip.audio])[0].patch.categorical[column]) + 1) % size
    matcher.left_out = {column: np.full(size, other)}
    assert matcher.predict([clip.audio])[0].patch.categorical[column] == other


def test_without_the_real_presets_answers_play_built_in_stand_ins(checkpoint, tmp_path):
    """A user without ../shared/real-presets cannot play the tables the banks harvested from
    it: the matcher says so, and every answer plays each one's built-in stand-in (the bank
    manifest's), library entries and the network's answer alike, instead of failing."""
    path, samples = _library(tmp_path, "studio", 3)
    studio = get_space("studio")
    bank = studio.banks["wavetables"]
    harvested = next(e.index for e in bank.entries if e.kind == "harvested")
    column = studio.index["osc_1_wavetable"] - len(studio.continuous)
    lib = Library.load(path)
    lib.categorical[:, column] = harvested  # every entry plays a harvested table
    lib.save(path)
    wav = _clip(samples, 1, tmp_path, scope="studio")
    (tmp_path / "no-presets").mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "model.match", str(wav), "-o", str(tmp_path / "m.vital"),
         "--checkpoint", str(checkpoint), "--library", str(path), "--budget", "1",
         "--json", str(tmp_path / "m.json")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "SYNTHMATCH_PRESETS": str(tmp_path / "no-presets")})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "no-presets is absent" in run.stderr and "SYNTHMATCH_PRESETS" in run.stderr
    answer = import_preset(load_preset(tmp_path / "m.vital"), studio, warn=False)
    kinds = {studio.banks[p.bank].entries[int(answer.categorical[studio.index[p.name]
                                                                   - len(studio.continuous)])].kind
             for p in studio.categorical if p.bank}
    assert "harvested" not in kinds
    # the answer is the entry the clip was rendered from, its table replaced by the stand-in
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["search"]["winner"]["library_id"] == FIRST_ID + 1
    assert answer.categorical[column] == bank.stand_in(harvested)
    assert studio.stand_in_classes() == ({}, {})  # here the folder is present: none stands in


def test_without_a_library_the_search_refines_the_networks_answer(library, tmp_path):
    path, samples = library
    # the shipped model: the untrained network's answer may be silent, with nothing to refine
    matcher = Matcher(mc_passes=2, use_library=False)
    found = matcher.match(_clip(samples, 2, tmp_path), budget_seconds=2.0)
    s = found.search
    assert set(s["best_by_source"]) <= {"point", "refinement"}
    assert s["winner"]["library_id"] is None
    assert s["refinement"]["from"] == "point" and s["refinement"]["evaluations"] >= 8
    assert s["refinement"]["distance_after"] <= s["refinement"]["distance_before"]


def test_the_budget_knob_on_the_command_line(checkpoint, library, tmp_path):
    path, samples = library
    clip = _clip(samples, 1, tmp_path)
    base = [sys.executable, "-m", "model.match", str(clip), "-o", str(tmp_path / "m.vital"),
            "--checkpoint", str(checkpoint), "--library", str(path)]
    bad = subprocess.run([*base, "--budget", "31"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--budget 31: allowed 0 to 30 seconds" in bad.stderr
    ok = subprocess.run([*base, "--budget", "2", "--json", str(tmp_path / "m.json")],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["search"]["winner"]["library_id"] == FIRST_ID + 1
    assert "candidates rendered, the answer from" in ok.stderr
    wrong = subprocess.run([*base[:-1], str(tmp_path / "bad.npz"), "--budget", "1"],
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert wrong.stderr.strip() == f"error: {tmp_path / 'bad.npz'}: no such file"


def test_the_search_scores_its_answer_as_the_report_measures_it(checkpoint, library,
                                                                 real_presets, tmp_path):
    """A real preset's clip, loud, with a long quiet tail: the search ranks in the clip's
    scale as given, where the report measures. auraloss's distance is not scale-free (it
    floors each STFT magnitude at 1e-4): in the prepared clip's scale (-35 dBFS) the quiet
    detail fell under that floor, and the search measured its answers 0.4 closer than the
    report then did."""
    path, _ = library
    matcher = Matcher(checkpoint, mc_passes=2, library=path)
    preset = next(p for p in real_presets if p.stem == "AccidentalMagic")
    renderer = Renderer(get_space("core"), FeatureConfig().render_config())
    sf.write(tmp_path / "clip.wav", renderer.render_preset(load_preset(preset), 60).audio, SR,
             subtype="FLOAT")
    found = matcher.match(tmp_path / "clip.wav", budget_seconds=2.0)
    assert found.level.source == "clip"
    winner = found.search["winner"]["distance"]
    # the preview is another render (another random phase): equal up to that, which for
    # this answer can reach 0.1 (2.768 against 2.665 in one CI run); the fault was 0.4
    assert winner == pytest.approx(found.distance["audio/mrstft"], abs=0.2), (
        winner, found.distance)
