"""The generate stage on a real local Ray: real renders, real Parquet, a real S3 server."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import local_ray, local_s3, pids_with

from distributed import dataset as fmt
from distributed.generate import GenerateConfig, GenerateError, generate, load_config_file
from distributed.storage import resolve
from synth import Patch, RenderConfig, Renderer, Sampler, SamplerConfig
from synth.audio import decode_flac, log_mel_distance
from synth.config import ConfigError

SR = 44100
SHORT = RenderConfig(note_dur=0.5, render_dur=0.75)  # keeps CI quick; defaults are 1.5/2 s


@pytest.fixture(scope="module")
def ray_local():
    with local_ray(no_progress_timeout_s=120) as ray:
        yield ray


def _cfg(n, **kw):
    render = kw.pop("render", SHORT)
    return GenerateConfig(num_samples=n, render=render, **kw)


def _table(path):
    files = fmt.data_files(resolve(str(path)))
    return pq.read_table(files).sort_by("id")


def test_small_dataset_end_to_end(ray_local, tmp_path):
    out = tmp_path / "ds"
    # a ceiling low enough that about a third of these 24 draws peak above it (the default
    # -10 dBFS catches at most one of them, and whether it does depends on oscillator phase)
    ceiling = -20.0
    manifest = generate(_cfg(24, rows_per_file=8, num_renderers=2, block_rows=6,
                             peak_ceiling_dbfs=ceiling), str(out))
    assert manifest["rows"] == 24 and manifest["valid_rows"] == 24
    assert fmt.verify(resolve(str(out))) == []
    assert json.loads((out / "manifest.json").read_text())["num_samples"] == 24

    table = _table(out)
    space = Sampler(SamplerConfig()).space
    assert table.column("id").to_pylist() == list(range(24))
    assert str(table.schema.field("continuous").type) == \
        f"fixed_size_list<element: float>[{len(space.continuous)}]"
    meta = fmt.read_file_metadata(resolve(str(out)), fmt.data_files(resolve(str(out)))[0])
    assert meta["space_id"] == space.id and meta["render"]["render_dur"] == 0.75
    assert meta["peak_ceiling_dbfs"] == ceiling
    assert meta["continuous"] == [p.name for p in space.continuous]
    assert manifest["bytes_per_sample"] < 120_000 * 0.75 / 2.0 * 1.2  # scaled to 0.75 s renders

    # rows are the sampler's draws (the loud ones turned down to the peak ceiling by their
    # master volume), and the audio is the render of the row's parameters
    sampler, renderer = Sampler(SamplerConfig()), Renderer(space, SHORT)
    vol = [p.name for p in space.continuous].index("volume")
    assert max(table.column("peak_dbfs").to_pylist()) <= ceiling + 1e-3
    turned = 0
    for row in table.to_pylist():
        s = sampler.sample(row["id"], row["attempts"] - 1)
        cont = np.array(row["continuous"], np.float32)
        drawn = s.patch.continuous.astype(np.float32)
        np.testing.assert_array_equal(np.delete(cont, vol), np.delete(drawn, vol))
        np.testing.assert_array_equal(row["categorical"], s.patch.categorical)
        assert row["note"] == s.note and row["base"] == s.base
        if cont[vol] != drawn[vol]:
            assert cont[vol] < drawn[vol] and row["peak_dbfs"] == pytest.approx(ceiling, abs=1e-3)
            turned += 1
            if turned > 2:
                continue
        elif row["id"] > 2:
            continue
        audio, sr = decode_flac(row["audio"])
        assert sr == SR and len(audio) == row["num_frames"] == SHORT.num_samples
        patch = Patch(cont.astype(np.float64), np.array(row["categorical"], np.int64))
        again = [renderer.render(patch, s.note).audio for _ in range(2)]
        floor = log_mel_distance(again[0], again[1], SR)
        assert log_mel_distance(audio, again[0], SR) <= 1.5 * floor + 0.1
    assert turned >= 5, f"only {turned} of the draws above {ceiling} dBFS were turned down"


def test_same_rows_whatever_the_blocks_and_actors(ray_local, tmp_path):
    a = generate(_cfg(16, num_renderers=1, block_rows=3, batch_size=2, rows_per_file=4),
                 str(tmp_path / "a"))
    b = generate(_cfg(16, num_renderers=2, block_rows=8, batch_size=5, rows_per_file=16),
                 str(tmp_path / "b"))
    assert len(a["files"]) > len(b["files"])
    ta, tb = _table(tmp_path / "a"), _table(tmp_path / "b")
    for col in ("id", "categorical", "note", "velocity", "base", "attempts"):
        assert ta.column(col).equals(tb.column(col)), col
    # the parameters too, but for the volume of a draw turned down to the peak ceiling,
    # which follows its render's peak (the oscillators' random phase)
    vol = [p.name for p in Sampler(SamplerConfig()).space.continuous].index("volume")
    ca, cb = (np.array(t.column("continuous").to_pylist()) for t in (ta, tb))
    np.testing.assert_array_equal(np.delete(ca, vol, axis=1), np.delete(cb, vol, axis=1))
    ceiling = GenerateConfig(num_samples=1).peak_ceiling_dbfs
    at_ceiling = [np.isclose(t.column("peak_dbfs").to_numpy(), ceiling, atol=1e-3)
                  for t in (ta, tb)]
    differ = ca[:, vol] != cb[:, vol]
    assert np.all(at_ceiling[0][differ] | at_ceiling[1][differ])
    same = [log_mel_distance(decode_flac(x)[0], decode_flac(y)[0], SR)
            for x, y in zip(ta.column("audio").to_pylist(), tb.column("audio").to_pylist(),
                            strict=True)]
    other = [log_mel_distance(decode_flac(x)[0], decode_flac(y)[0], SR)
             for x, y in zip(ta.column("audio").to_pylist(), tb.column("audio").to_pylist()[1:],
                             strict=False)]
    assert np.median(same) < 0.5 * np.median(other)


def test_resume_renders_only_what_is_missing(ray_local, tmp_path):
    out = tmp_path / "ds"
    cfg = _cfg(20, rows_per_file=5, block_rows=5, num_renderers=2)
    generate(cfg, str(out))
    files = sorted((out / "data").glob("*.parquet"))
    # an interrupted run: no manifest, one file never written, one cut short
    (out / "manifest.json").unlink()
    lost = pq.read_table(files[0]).num_rows
    files[0].unlink()
    cut = files[1].read_bytes()
    lost += pq.read_table(files[1]).num_rows
    files[1].write_bytes(cut[: len(cut) // 3])
    manifest = generate(cfg, str(out))
    assert manifest["timings"]["last_run_rendered"] == lost
    assert manifest["rows"] == 20 and fmt.verify(resolve(str(out))) == []
    # other arguments on the same folder are refused; so is a count it cannot grow to
    with pytest.raises(GenerateError, match="other arguments .*max_attempts"):
        generate(_cfg(20, rows_per_file=5, max_attempts=3), str(out))
    with pytest.raises(GenerateError, match="other arguments .*num_samples"):
        generate(_cfg(19, rows_per_file=5), str(out))
    with pytest.raises(GenerateError, match="holds this job with 20 samples; pass --grow"):
        generate(_cfg(21, rows_per_file=5), str(out))


def test_a_finished_dataset_grows_to_more_samples(ray_local, tmp_path):
    """``--grow``: the rows already written stay as they are (the same files), only the new
    ids are rendered, and the grown dataset is the one a job of the larger count makes."""
    out = tmp_path / "ds"
    generate(_cfg(6, rows_per_file=3, block_rows=3, num_renderers=2), str(out))
    before = {f.name: f.read_bytes() for f in (out / "data").glob("*.parquet")}
    manifest = generate(_cfg(10, rows_per_file=3, block_rows=3, num_renderers=2), str(out),
                        grow=True)
    assert manifest["num_samples"] == 10 and manifest["rows"] == 10
    assert manifest["timings"]["last_run_rendered"] == 4
    assert fmt.verify(resolve(str(out))) == []
    assert all((out / "data" / name).read_bytes() == data for name, data in before.items())
    grown = _table(out)
    assert grown.column("id").to_pylist() == list(range(10))
    # the new rows are the larger job's own: the draws a 10-sample job makes (up to the
    # volume of a draw turned down to the peak ceiling, which follows its render's phase)
    fresh = tmp_path / "fresh"
    generate(_cfg(10, rows_per_file=5, num_renderers=2), str(fresh))
    made = _table(fresh)
    for key in ("categorical", "note", "velocity", "attempts"):
        assert grown.column(key).equals(made.column(key)), key
    vol = [p.name for p in Sampler(SamplerConfig()).space.continuous].index("volume")
    np.testing.assert_array_equal(
        *(np.delete(np.array(t.column("continuous").to_pylist()), vol, axis=1)
          for t in (grown, made)))
    # a finished, grown job reruns as finished; growing again needs --grow again
    assert generate(_cfg(10, rows_per_file=3), str(out))["created"] == manifest["created"]
    with pytest.raises(GenerateError, match="pass --grow"):
        generate(_cfg(12, rows_per_file=3), str(out))


def test_killed_job_resumes_from_the_command_line(ray_local, tmp_path):
    out = tmp_path / "ds"
    address = ray_local.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "distributed.generate", "--num-samples", "40", "--out",
           str(out), "--rows-per-file", "4", "--address", address, "--renderers", "2",
           "--config", str(tmp_path / "c.json")]
    (tmp_path / "c.json").write_text(json.dumps({"block_rows": 4, "render": SHORT.to_dict()}))
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "data").glob("*.parquet"))) < 2:
        time.sleep(0.2)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert not (out / "manifest.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming:" in done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["timings"]["last_run_rendered"] < 40
    verify = subprocess.run([sys.executable, "-m", "distributed.generate", "--verify", str(out)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout
    assert verify.stdout.startswith(f"OK {out}: ") and "and 40 rows" in verify.stdout
    assert "sha256" in verify.stdout and "ids 0-39 each present once" in verify.stdout
    # a rerun of the finished job reads the manifest and ends, before connecting to Ray
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "complete already: 40 rows" in again.stderr
    assert "Ray" not in again.stderr, again.stderr


def test_killed_worker_loses_and_duplicates_nothing(ray_local, tmp_path):
    out = tmp_path / "ds"
    killed = []

    def kill_one_renderer():
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            pids = pids_with(b'MapBatches(render_ids)')
            if pids and len(list((out / "data").glob("*.parquet"))) >= 1:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_renderer)
    killer.start()
    manifest = generate(_cfg(60, rows_per_file=4, block_rows=4, batch_size=2, num_renderers=2),
                        str(out))
    killer.join()
    assert killed, "no renderer actor was found to kill"
    assert manifest["rows"] == 60 and fmt.verify(resolve(str(out))) == []


def test_verify_names_a_deleted_and_a_corrupted_file(ray_local, tmp_path):
    out = tmp_path / "ds"
    generate(_cfg(12, rows_per_file=2, block_rows=2, batch_size=2), str(out))
    files = sorted((out / "data").glob("*.parquet"))
    assert len(files) >= 2
    files[0].unlink()
    data = bytearray(files[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    files[1].write_bytes(bytes(data))
    problems = fmt.verify(resolve(str(out)))
    assert f"data/{files[0].name}: missing" in problems
    assert any(p.startswith(f"data/{files[1].name}: checksum mismatch") for p in problems)
    cli = subprocess.run([sys.executable, "-m", "distributed.generate", "--verify", str(out)],
                         capture_output=True, text=True)
    assert cli.returncode == 1 and f"FAIL data/{files[0].name}: missing" in cli.stdout


def test_rejected_draws_are_counted_and_replaced(ray_local, tmp_path):
    # A strict silence threshold turns quiet draws into rejections.
    strict = RenderConfig(note_dur=0.5, render_dur=0.75, silence_dbfs=-20.0)
    manifest = generate(_cfg(16, render=strict, rows_per_file=8, max_attempts=20),
                        str(tmp_path / "ds"))
    table = _table(tmp_path / "ds")
    assert manifest["rejected_draws"].get("silent", 0) > 0
    assert manifest["rejected_draws"]["silent"] == sum(
        r.count("silent") for r in table.column("rejections").to_pylist())
    assert table.column("valid").to_pylist() == [True] * 16
    assert max(table.column("attempts").to_pylist()) > 1
    assert min(table.column("peak_dbfs").to_pylist()) > -20.0


def test_s3_round_trip(ray_local, tmp_path):
    with local_s3() as s3:
        uri = s3("datasets/tiny")
        manifest = generate(_cfg(8, rows_per_file=4, block_rows=4), uri)
        loc = resolve(uri)
        assert manifest["rows"] == 8 and fmt.verify(loc) == []
        assert len(fmt.data_files(loc)) == len(manifest["files"])
        # resuming a finished remote dataset renders nothing
        assert generate(_cfg(8, rows_per_file=4, block_rows=4), uri)["created"] == \
            manifest["created"]


def test_a_library_is_built_from_a_dataset_on_the_command_line(ray_local, tmp_path):
    """``python -m model.library``: every valid row, in id order, its patch drawn again
    exactly as the row holds it (or stored, on request), and its own audio (any level)
    found first; a studio dataset embedded with the shipped core model's features (the
    matcher lifts the network's answers into the library's scope). A library whose patches
    this synthmatch's sampler would draw otherwise is refused on load."""
    import torch

    from model.features import FeatureConfig, LogMel
    from model.library import Library, LibraryError, embed_clips

    out = tmp_path / "ds"
    generate(_cfg(12, rows_per_file=4, num_renderers=2, block_rows=4,
                  sampler=SamplerConfig(scope="studio")),
             str(out))
    cli = subprocess.run([sys.executable, "-m", "model.library", "--data", str(out), "--out",
                          str(tmp_path / "lib.npz")], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "12 entries of scope studio" in cli.stderr
    lib, table = Library.load(tmp_path / "lib.npz"), _table(out)
    assert list(lib.id) == table.column("id").to_pylist() == list(range(12))
    assert lib.header["source"]["dataset"] == str(out) and lib.header["source"]["rows"] == 12
    assert lib.drawn and lib.continuous is None  # ids, draws and volumes: no patches kept
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        np.testing.assert_allclose(lib.patch(i).continuous, row["continuous"], rtol=0,
                                   atol=1e-6)
        np.testing.assert_array_equal(lib.patch(i).categorical, row["categorical"])
    assert list(lib.note) == table.column("note").to_pylist()
    stored = subprocess.run([sys.executable, "-m", "model.library", "--data", str(out),
                             "--out", str(tmp_path / "stored.npz"), "--patches", "stored"],
                            capture_output=True, text=True, timeout=300)
    assert stored.returncode == 0, stored.stderr[-2000:]
    kept = Library.load(tmp_path / "stored.npz")
    assert not kept.drawn
    for i, row in enumerate(rows):
        np.testing.assert_allclose(kept.patch(i).continuous, row["continuous"], atol=1e-3)
        np.testing.assert_array_equal(kept.patch(i).categorical, row["categorical"])
    # a sampler that draws a witness otherwise (another synthmatch) is refused on load
    lib.header["witnesses"][1]["continuous"][0] += 0.01
    lib.save(tmp_path / "other.npz")
    with pytest.raises(LibraryError, match="draws entry 1 otherwise"):
        Library.load(tmp_path / "other.npz")
    lib.header["source"]["sampler"]["colour"] = "red"  # a sampler of a later synthmatch
    lib.save(tmp_path / "newer.npz")
    with pytest.raises(LibraryError, match="cannot make the sampler that drew this library"):
        Library.load(tmp_path / "newer.npz")
    frontend = LogMel(FeatureConfig())
    for i, row in enumerate(rows):
        audio = decode_flac(row["audio"])[0] * np.float32(0.1 if i % 2 else 3.0)
        idx, _ = lib.nearest(torch.from_numpy(embed_clips(frontend, [audio])[0]
                                              .astype(np.float32)), 1)
        assert idx[0] == i
    missing = subprocess.run([sys.executable, "-m", "model.library", "--data",
                              str(tmp_path / "nothing"), "--out", str(tmp_path / "x.npz")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no data/*.parquet files" in missing.stderr
    assert not (tmp_path / "x.npz").exists()


def test_bad_config_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="rows_per_file = 0"):
        GenerateConfig(num_samples=4, rows_per_file=0)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['colour'\]"):
        GenerateConfig.from_dict({"num_samples": 4, "colour": "red"})
    with pytest.raises(ConfigError, match=r"sampler: unknown key\(s\) \['sead'\]"):
        GenerateConfig.from_dict({"num_samples": 4, "sampler": {"sead": 1}})
    bad = tmp_path / "bad.toml"
    bad.write_text("num_samples = [")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config_file(bad)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="list.json: expected an object of config keys"):
        load_config_file(listed)
    cli = subprocess.run([sys.executable, "-m", "distributed.generate", "--out", str(tmp_path),
                          "--num-samples", "0"], capture_output=True, text=True)
    assert cli.returncode == 2 and "num_samples = 0 is not allowed" in cli.stderr
