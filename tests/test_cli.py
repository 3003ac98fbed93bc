import subprocess
import sys

import soundfile as sf

from synth import load_preset


def _run(*args, check=True):
    return subprocess.run([sys.executable, "-m", "synth", *args], capture_output=True, text=True,
                          check=check)


def test_help_for_every_command():
    for args in ([], ["space"], ["render"], ["sample"]):
        out = _run(*args, "--help")
        assert "usage: python -m synth" in out.stdout


def test_space_prints_the_table_and_counts():
    out = _run("space", "--scope", "core").stdout
    assert "filter_1_cutoff" in out
    assert "68 continuous + 24 categorical = 92 parameters" in out
    assert "320  modulation-slot mechanics" in out


def test_render_writes_a_wav(real_presets, tmp_path):
    wav = tmp_path / "out.wav"
    _run("render", str(real_presets[0]), "-o", str(wav), "--note", "48", "--dur", "1.0",
         "--note-dur", "0.5")
    audio, sr = sf.read(wav)
    assert sr == 44100 and audio.shape == (44100,) and abs(audio).max() > 0.01


def test_sample_writes_a_preset_and_a_wav(tmp_path):
    _run("sample", "--seed", "1", "--index", "2", "-o", str(tmp_path / "s.vital"),
         "--wav", str(tmp_path / "s.wav"))
    preset = load_preset(tmp_path / "s.vital")
    assert preset.data["preset_name"] == "synthmatch sample 1-2"
    audio, _ = sf.read(tmp_path / "s.wav")
    assert abs(audio).max() > 0.001


def test_errors_are_one_line_without_traceback(tmp_path):
    out = _run("render", str(tmp_path / "missing.vital"), "-o", str(tmp_path / "x.wav"),
               check=False)
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {tmp_path / 'missing.vital'}: no such file"
    out = _run("render", str(tmp_path / "missing.vital"), "-o", "x.wav", "--velocity", "3",
               check=False)
    assert out.returncode == 2 and "velocity = 3.0 is not allowed" in out.stderr
    assert "Traceback" not in out.stderr


def test_output_piped_into_a_reader_that_stops_early_ends_quietly():
    # like `python -m synth space --scope full --json | head -1`: the JSON (about 130 KB)
    # overflows the pipe's buffer, so the command is still writing when the reader leaves
    proc = subprocess.Popen([sys.executable, "-m", "synth", "space", "--scope", "full",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"{"
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-1000:]
    assert err == b""  # no "error: [Errno 32] Broken pipe", no "Exception ignored" lines
