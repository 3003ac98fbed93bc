"""Training on a real local Ray: a tiny generated dataset, Ray Train DDP, real checkpoints."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch
from conftest import local_ray, local_s3, pids_with, tiny_dataset

from distributed.storage import list_files, read_bytes, resolve, write_atomic
from distributed.train import TrainConfig, accumulation_step, epoch_lr, fit
from model.checkpoint import CheckpointError, fetch, load_checkpoint, save_checkpoint
from model.features import FeatureConfig
from model.loss import LossConfig, MatchLoss
from model.network import MatchNet, ModelConfig
from model.sound import SoundConfig
from synth import RenderConfig, get_space
from synth.config import ConfigError

SHORT = RenderConfig(note_dur=0.5, render_dur=0.75)
FEATURES = FeatureConfig(duration_s=0.75, n_mels=32, n_fft=1024, hop=512)
SMALL = ModelConfig(channels=(8, 16), hidden=32, dropout=0.0)


@pytest.fixture(scope="module")
def ray_local():
    with local_ray() as ray:
        # Train workers import functions by module name; this test module is not installed.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        yield ray


@pytest.fixture(scope="module")
def tiny_data(ray_local, tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), workers=2, cpus_per_worker=1.0, batch_size=8,
                grad_accum=2, epochs=2, features=FEATURES, model=SMALL, audio_eval_presets=2,
                val_fraction=0.25, shuffle_buffer=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    # select_by="audio": only rank 0 renders, so every rank must still agree on the score
    result = fit(_cfg(tiny_data, run, select_by="audio", patience=1))
    assert result.error is None
    return run


def test_two_workers_write_a_loadable_checkpoint(trained):
    ckpt = load_checkpoint(trained / "model.pt")
    assert ckpt.space.id == get_space("core").id and ckpt.features == FEATURES
    out = ckpt.model(torch.zeros(1, FEATURES.num_samples))
    assert out.continuous.shape == (1, len(ckpt.space.continuous))
    lines = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1]
    assert {"val/loss", "val/mae/osc_1", "val/acc/note", "val/audio/mrstft"} <= set(lines[-1])
    assert lines[-1]["val/best"] == min(x["val/audio/mrstft"] for x in lines)
    # model.pt is the best epoch's, and says so (its number and metrics, not the last one's)
    best = min(lines, key=lambda x: x["val/audio/mrstft"])
    assert ckpt.training["epoch"] == best["epoch"]
    assert ckpt.training["metrics"]["val/audio/mrstft"] == best["val/audio/mrstft"]
    assert list((trained / "wandb").glob("offline-run-*"))  # the real client, offline


def test_evaluate_reports_model_and_baselines(trained, tiny_data, tmp_path, real_presets):
    report = tmp_path / "eval.json"
    cli = subprocess.run([sys.executable, "-m", "model.evaluate", "--checkpoint",
                          str(trained / "model.pt"), "--data", str(tiny_data), "--limit", "4",
                          "--json", str(report)], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    doc = json.loads(report.read_text())
    assert set(doc["audio"]) == {"init", "nearest", "model"}
    assert all(v["median mrstft"] > 0 for v in doc["audio"].values())
    # the parameters of the model's and the neighbour's answers, scored alike
    assert set(doc["params"]) == {"model", "nearest"}
    for method in ("model", "nearest"):
        assert 0 <= doc["params"][method]["acc/note"] <= 1
        assert 0 <= doc["params"][method]["mae/all"] <= 1
    presets = tmp_path / "presets"
    presets.mkdir()
    for p in real_presets[:2]:
        (presets / p.name).write_bytes(p.read_bytes())
    cli = subprocess.run([sys.executable, "-m", "model.evaluate", "--checkpoint",
                          str(trained / "model.pt"), "--presets", str(presets), "--json",
                          str(report)], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert set(json.loads(report.read_text())["per_preset"]) == {p.stem for p in real_presets[:2]}


def test_fine_tuning_through_the_sound_starts_from_the_checkpoint(trained, tiny_data, tmp_path):
    init = trained / "model.pt"
    # a learning rate too small to move the weights: the result must be the start point
    result = fit(_cfg(tiny_data, tmp_path / "ft", epochs=1, lr=1e-9, max_steps_per_epoch=2,
                      init_checkpoint=str(init), sound=SoundConfig(weight=1.0, samples=2)))
    assert result.error is None
    line = json.loads((tmp_path / "ft" / "metrics.jsonl").read_text())
    assert line["train/steps"] == 2  # capped, from an epoch of 4 steps
    assert line["train/reward"] < 0 and np.isfinite(line["train/sound"])
    tuned, start = (load_checkpoint(p).model.state_dict() for p in (tmp_path / "ft" / "model.pt",
                                                                     init))
    assert all(torch.allclose(tuned[k], start[k], atol=1e-5) for k in start)
    with pytest.raises(ConfigError, match="init_checkpoint .* has model"):
        fit(_cfg(tiny_data, tmp_path / "other", init_checkpoint=str(init),
                 model=ModelConfig(channels=(8,), hidden=16)))


def test_importance_ranks_volume_above_a_silent_knob(ray_local, tiny_data):
    from distributed.importance import measure
    from distributed.train import load_importance

    doc = measure(str(tiny_data), num_presets=3)
    weights = doc["weights"]
    assert np.mean(list(weights.values())) == pytest.approx(1.0, abs=1e-3)
    assert weights["volume"] > np.median(list(weights.values()))
    # the oscillator phase is randomised in the base preset: moving it changes nothing heard
    assert weights["osc_1_phase"] < weights["volume"]
    vec = load_importance(_cfg(tiny_data, "o", loss=LossConfig(importance=True)),
                          get_space("core"))
    assert len(vec) == len(get_space("core").continuous)


def test_killed_run_resumes_from_its_last_epoch(ray_local, tiny_data, tmp_path):
    run = tmp_path / "run"
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({"features": FEATURES.to_dict(), "model": SMALL.to_dict(),
                               "val_fraction": 0.25, "audio_eval_presets": 0,
                               "shuffle_buffer": 0}))
    cmd = [sys.executable, "-m", "distributed.train", "--data", str(tiny_data), "--out", str(run),
           "--workers", "1", "--batch-size", "8", "--epochs", "6", "--config", str(cfg),
           "--no-wandb", "--address", ray_local.get_runtime_context().gcs_address]
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n")):
        time.sleep(0.1)
    job.send_signal(signal.SIGKILL)
    job.wait()
    first = [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()]
    assert first and first[-1] < 4
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    epochs = [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()]
    # The second run starts after the latest complete checkpoint (the last logged epoch,
    # or one more if the kill fell between its checkpoint and its log line), not from 0.
    resumed = epochs[len(first):]
    assert resumed and first[-1] < resumed[0] <= first[-1] + 2, (first, epochs)
    assert epochs[-1] == 5
    assert "resuming after epoch" in done.stderr


def test_a_run_on_s3_keeps_everything_there_and_resumes_from_it(ray_local, tiny_data, tmp_path,
                                                                 monkeypatch):
    """``--out s3://...``: Ray Train's storage, the checkpoints, ``metrics.jsonl`` and
    ``model.pt`` all land in the object store, and the same command with more epochs goes
    on from the checkpoint it finds there, with nothing written to the working folder."""
    with local_s3() as uri:
        run = uri("runs/s3")
        cfg = dict(workers=1, epochs=1, audio_eval_presets=0)
        assert fit(_cfg(tiny_data, run, **cfg)).error is None
        assert fit(_cfg(tiny_data, run, **{**cfg, "epochs": 2})).error is None
        out = resolve(run)
        lines = [json.loads(x) for x in read_bytes(out.fs, out.join("metrics.jsonl")).splitlines()]
        assert [x["epoch"] for x in lines] == [0, 1]  # the second run began at epoch 1
        checkpoints = sorted((i for i in out.fs.get_file_info(pafs.FileSelector(out.join("ray")))
                              if i.type == pafs.FileType.Directory
                              and i.base_name.startswith("checkpoint_")), key=lambda i: i.path)
        assert len(checkpoints) == 2
        assert {f.base_name for f in list_files(out.fs, checkpoints[-1].path, ".pt")} == {
            "model.pt", "best.pt", "state.pt"}
        # a checkpoint URI is fetched into the local cache, as Serve's replicas take it
        monkeypatch.setenv("SYNTHMATCH_CACHE", str(tmp_path / "cache"))
        assert load_checkpoint(uri("runs/s3/model.pt")).training["epoch"] in (0, 1)
        assert load_checkpoint(uri("runs/s3")).space.id == get_space("core").id  # its folder
        with pytest.raises(CheckpointError, match="no such checkpoint"):
            load_checkpoint(uri("runs/none/model.pt"))
        assert (tmp_path / "cache" / "checkpoints").is_dir()
        # fetched again, an unchanged file is not downloaded again; a changed one is
        local = fetch(uri("runs/s3/model.pt"))
        before = local.stat().st_mtime_ns
        assert fetch(uri("runs/s3/model.pt")) == local and local.stat().st_mtime_ns == before
        changed = read_bytes(out.fs, out.join("model.pt")) + b"changed"
        write_atomic(out.fs, out.join("model.pt"), changed)
        assert fetch(uri("runs/s3/model.pt")).read_bytes() == changed
    assert not list(Path.cwd().glob("s3*"))  # no local folder named after the URI


@pytest.mark.parametrize("cache", ["never", "always"])
def test_capped_epochs_go_on_where_the_last_one_stopped(ray_local, tiny_data, tmp_path, cache):
    """Capped epochs read one stream over the training split: two epochs of 2 steps use a
    pass of 4 (16 rows a worker, micro-batches of 2, 2 per step), then a new pass begins.
    Restarting at the split's first rows every epoch would show passes 0, 1, 2, 3 or 0, 0,
    0, 0; a cached split (where a random block order is drawn once) must behave the same."""
    result = fit(_cfg(tiny_data, tmp_path / "run", epochs=4, max_steps_per_epoch=2,
                      audio_eval_presets=0, cache_decoded=cache))
    assert result.error is None
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["train/steps"] for x in lines] == [2, 2, 2, 2]
    passes = [x["train/pass"] for x in lines]
    assert passes == sorted(passes) and passes[0] == 0 and 1 <= passes[-1] < 3, passes


def _synthetic_batches(space, n, seed):
    from distributed.train import Batch
    from model.loss import Targets

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        cats = torch.stack([torch.randint(0, p.num_classes, (2,), generator=g)
                            for p in space.categorical], dim=1)
        out.append(Batch(torch.randn(2, FEATURES.num_samples, generator=g) * 0.1,
                         Targets(torch.rand(2, len(space.continuous), generator=g), cats,
                                 torch.randint(36, 85, (2,), generator=g))))
    return out


def _one_step(config):
    """One optimizer step on rank-seeded data; reports the updated weights."""
    import ray.train
    import ray.train.torch

    from distributed.train import Batch
    from model.loss import Targets

    space = get_space("core")
    torch.manual_seed(0)
    model = ray.train.torch.prepare_model(MatchNet(space, FEATURES, SMALL))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    micro = _synthetic_batches(space, 4, seed=100 + ray.train.get_context().get_world_rank())
    k = config["k"]
    if k == 1:  # the same examples as one batch
        micro = [Batch(torch.cat([b.audio for b in micro]),
                       Targets(*(torch.cat([getattr(b.target, f) for b in micro])
                                 for f in ("continuous", "categorical", "note"))))]
    from model.checkpoint import unwrap

    accumulation_step(model, micro, MatchLoss(unwrap(model).layout, LossConfig()), opt)
    flat = torch.cat([p.detach().flatten() for p in unwrap(model).parameters()])
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report({})
        return
    import tempfile

    with tempfile.TemporaryDirectory() as d:  # Train V2 keeps metrics only with a checkpoint
        np.save(f"{d}/weights.npy", flat.numpy())
        ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(d))


@pytest.mark.parametrize("workers", [1, 2])
def test_accumulated_micro_batches_equal_one_big_batch(ray_local, tmp_path, workers):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def run(k):
        trainer = TorchTrainer(_one_step, train_loop_config={"k": k},
                               scaling_config=ScalingConfig(num_workers=workers,
                                                            resources_per_worker={"CPU": 1}),
                               run_config=RunConfig(storage_path=str(tmp_path), name=f"k{k}"))
        with trainer.fit().checkpoint.as_directory() as d:
            return np.load(f"{d}/weights.npy")

    accumulated, big = run(4), run(1)
    torch.manual_seed(0)
    before = torch.cat([p.detach().flatten()
                        for p in MatchNet(get_space("core"), FEATURES, SMALL).parameters()])
    assert not np.allclose(accumulated, before.numpy())  # the step moved the weights
    np.testing.assert_allclose(accumulated, big, rtol=1e-4, atol=1e-6)


def test_bad_train_config_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="batch_size = 10 is not allowed; expected a positive "
                                          r"multiple of workers x grad_accum \(4\)"):
        TrainConfig(data="d", out="o", workers=2, grad_accum=2, batch_size=10)
    with pytest.raises(ConfigError, match="label_smoothing = 1.5"):
        TrainConfig.from_dict({"data": "d", "out": "o", "loss": {"label_smoothing": 1.5}})
    with pytest.raises(ConfigError, match=r"train config: unknown key\(s\) \['epoch'\]"):
        TrainConfig.from_dict({"data": "d", "out": "o", "epoch": 3})
    cli = subprocess.run([sys.executable, "-m", "distributed.train", "--data", "d", "--out",
                          "o", "--epochs", "0"], capture_output=True, text=True)
    assert cli.returncode == 2 and "epochs = 0 is not allowed" in cli.stderr


def test_int16_cache_decodes_to_exactly_the_float_audio():
    from model.data import audio_tensor
    from synth.audio import decode_flac, encode_flac

    audio = (np.random.default_rng(0).standard_normal(44100) * 0.3).astype(np.float32)
    data = encode_flac(audio, 44100)
    as_float, _ = decode_flac(data)
    as_pcm, _ = decode_flac(data, "int16")
    assert as_pcm.dtype == np.int16 and as_pcm.nbytes * 2 == as_float.nbytes
    assert torch.equal(audio_tensor(torch.from_numpy(as_pcm)), torch.from_numpy(as_float))


def test_cosine_learning_rate_is_a_function_of_the_epoch():
    cfg = TrainConfig(data="d", out="o", epochs=10, lr=1e-3, lr_schedule="cosine")
    lrs = [epoch_lr(cfg, e) for e in range(10)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[5] == pytest.approx(5e-4)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False)) and lrs[-1] > 0
    assert epoch_lr(TrainConfig(data="d", out="o", lr=2e-3), 7) == 2e-3
    with pytest.raises(ConfigError, match="audio_eval_presets = 0 .* select_by = 'audio'"):
        TrainConfig(data="d", out="o", select_by="audio", audio_eval_presets=0)
    with pytest.raises(ConfigError, match="lr_schedule = 'linear'"):
        TrainConfig(data="d", out="o", lr_schedule="linear")


def test_checkpoint_refuses_another_space_or_version(tmp_path):
    space = get_space("core")
    path = save_checkpoint(tmp_path / "m.pt", MatchNet(space, FEATURES, SMALL), space, FEATURES,
                           SMALL, LossConfig(), {"epoch": 0})
    payload = torch.load(path, weights_only=False)
    payload["space"]["id"] = "core-0000000000000000"
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="made in parameter space 'core-0000000000000000'"):
        load_checkpoint(tmp_path / "other.pt")
    payload["version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="checkpoint format version 99"):
        load_checkpoint(tmp_path / "future.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_a_killed_worker_restarts_from_the_last_checkpoint(tiny_data, tmp_path):
    import os
    import threading

    run = tmp_path / "run"
    metrics = run / "metrics.jsonl"
    killed = []

    def kill_a_worker():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            if metrics.exists() and metrics.read_text().count("\n") >= 1:
                pids = pids_with(b'RayTrainWorker')
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    result = fit(_cfg(tiny_data, run, workers=1, grad_accum=1, epochs=4, wandb=False,
                      audio_eval_presets=0))
    killer.join()
    assert killed and result.error is None
    epochs = [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()]
    assert epochs.count(0) == 1 and epochs[-1] == 3, epochs  # continued, not restarted


def test_batch_matching_writes_presets_and_a_results_table(trained, tmp_path):
    import soundfile as sf

    from distributed.match import run
    from synth import Renderer, Sampler, SamplerConfig, load_preset

    clips = tmp_path / "clips"
    clips.mkdir()
    sampler = Sampler(SamplerConfig(seed=3))
    renderer = Renderer(sampler.space, SHORT)
    for i in range(2):
        s = sampler.sample(i)
        sf.write(clips / f"clip{i}.wav", renderer.render(s.patch, 60).audio, 44100)
    (clips / "broken.wav").write_text("not audio")
    rows = run(str(clips), str(tmp_path / "out"), checkpoint=str(trained / "model.pt"),
               workers=2)
    assert [r["clip"] for r in rows] == ["broken.wav", "clip0.wav", "clip1.wav"]
    assert "not a readable audio file" in rows[0]["error"] and not rows[0]["preset"]
    for row in rows[1:]:
        assert not row["error"]
        load_preset(tmp_path / "out" / row["preset"])
        # the default 1 s search, without a library beside this checkpoint: the network's
        # answer, refined when it is audible
        assert row["answer_from"] in ("point", "refinement") and int(row["rendered"]) >= 1
    table = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert table[0].startswith("clip,preset,note") and len(table) == 4
