"""Ray Tune over Ray Train on a real local Ray: a tiny generated dataset, three real trials."""

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import local_ray, metrics, tiny_dataset

from distributed.train import TrainConfig
from model.checkpoint import load_checkpoint
from model.features import FeatureConfig
from model.network import ModelConfig
from synth.config import ConfigError
from tuning.sweep import BEST, METRIC, SEARCHED, SweepConfig, sweep

SWEEP = SweepConfig(trials=3, seed=0)


@pytest.fixture(scope="module")
def ray_local():
    # the dashboard stays on: Tune frees a stopped trial's Train workers through it
    with local_ray(dashboard=True) as ray:
        yield ray


@pytest.fixture(scope="module")
def base(ray_local, tmp_path_factory):
    data = tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")
    return TrainConfig(data=str(data), out="", workers=1, batch_size=8, grad_accum=2, epochs=2,
                       features=FeatureConfig(duration_s=0.75, n_mels=32, n_fft=1024, hop=512),
                       model=ModelConfig(channels=(8, 16), hidden=32, dropout=0.0),
                       audio_eval_presets=2, val_fraction=0.25, shuffle_buffer=0, wandb=False)


@pytest.fixture(scope="module")
def swept(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return out, sweep(base, SWEEP, str(out))


def _history(out, trial_id):
    return metrics(out / "trials" / trial_id)


def test_trials_draw_their_own_loss_and_report_every_epoch(swept, base):
    out, rows = swept
    assert len(rows) == SWEEP.trials and not any(r["error"] for r in rows)
    # the first trial is the base config's own values, the others are drawn
    first = min(rows, key=lambda r: r["trial_id"])
    assert [first[k] for k in SEARCHED] == [getattr(base.loss, k) for k in SEARCHED]
    for key, (low, high) in (("categorical", SWEEP.categorical), ("note", SWEEP.note),
                             ("label_smoothing", SWEEP.label_smoothing)):
        values = [r[key] for r in rows]
        assert len(set(values)) == SWEEP.trials and all(low <= v <= high for v in values)
    for r in rows:  # each trial's own Train run, with the loss Tune drew for it
        history = _history(out, r["trial_id"])
        assert [h["epoch"] for h in history] == list(range(len(history)))
        # ASHA may stop a trial after its grace epoch; it may log the epoch it is in
        assert 1 <= r["epochs"] <= len(history) <= r["epochs"] + 1
        assert r[BEST] == min(h[METRIC] for h in history[:r["epochs"]])
        trained = load_checkpoint(Path(r["checkpoint"]) / "best.pt")
        assert trained.loss.categorical == r["categorical"]
        assert trained.loss.label_smoothing == r["label_smoothing"]
        assert trained.training["metrics"][METRIC] == r[BEST]
    assert (out / "trials.csv").read_text().count("\n") == SWEEP.trials + 1


def test_best_config_and_model_are_the_best_trials(swept, base):
    out, rows = swept
    # the best by each trial's own log (the epochs Tune saw), not by the sweep's table
    best = min(rows, key=lambda r: min(h[METRIC]
                                       for h in _history(out, r["trial_id"])[:r["epochs"]]))
    assert best is rows[0]
    cfg = TrainConfig.from_dict({**json.loads((out / "best.json").read_text()), "out": "x"})
    assert (cfg.loss.categorical, cfg.loss.note, cfg.loss.label_smoothing) == (
        best["categorical"], best["note"], best["label_smoothing"])
    assert cfg.select_by == "audio" and cfg.model == base.model and cfg.data == base.data
    model = load_checkpoint(out / "model.pt")
    assert model.loss == cfg.loss
    assert model.training["metrics"][METRIC] == best[BEST]


def test_a_finished_sweep_leaves_no_cpu_reserved(swept, ray_local):
    """Each trial's Train run reserves its worker's CPU in a placement group that outlives
    the trial; the sweep removes them, or the next job from this process waits for ever."""
    from ray.util import placement_group_table

    job = ray_local.get_runtime_context().get_job_id()
    assert [g for i, g in placement_group_table().items()
            if i.endswith(job) and g["state"] != "REMOVED"] == []
    assert ray_local.available_resources().get("CPU") == ray_local.cluster_resources()["CPU"]


def test_running_again_resumes_the_finished_sweep(swept, base):
    out, rows = swept
    again = sweep(base, SWEEP, str(out))
    assert again == rows  # the same trials, none run again
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(r["trial_id"]
                                                                        for r in rows)


def test_killed_sweep_resumes_its_trials_from_their_checkpoints(ray_local, base, tmp_path):
    out = tmp_path / "sweep"
    train_json, sweep_json = tmp_path / "train.json", tmp_path / "sweep.json"
    doc = base.to_dict()
    for key in ("data", "out"):
        doc.pop(key)
    train_json.write_text(json.dumps(doc))
    sweep_json.write_text(json.dumps({"trials": 2, "seed": 1}))
    cmd = [sys.executable, "-m", "tuning.sweep", "--data", base.data, "--out", str(out),
           "--config", str(train_json), "--sweep-config", str(sweep_json), "--epochs", "3",
           "--address", ray_local.get_runtime_context().gcs_address]
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not any(
            p.read_text().count("\n") for p in out.glob("trials/*/metrics.jsonl")):
        time.sleep(0.1)
    job.send_signal(signal.SIGKILL)
    job.wait()
    first = {p.parent.name: p.read_text().count("\n")
             for p in out.glob("trials/*/metrics.jsonl")}
    assert first and all(n < 3 for n in first.values()) and not (out / "trials.csv").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming the sweep" in done.stderr
    trials = sorted(p.name for p in (out / "trials").iterdir())
    assert len(trials) == 2 and set(first) <= set(trials)  # the same trials, none new
    for trial_id in first:  # each went on after its last checkpoint: no epoch twice
        epochs = [h["epoch"] for h in _history(out, trial_id)]
        assert len(epochs) > first[trial_id] and len(set(epochs)) == len(epochs), epochs
    assert (out / "best.json").is_file() and (out / "model.pt").is_file()


def test_what_would_fail_every_trial_fails_before_the_first(base, tmp_path):
    weighted = dataclasses.replace(base, loss=dataclasses.replace(base.loss, importance=True))
    with pytest.raises(ConfigError, match="has no importance.json"):
        sweep(weighted, SWEEP, str(tmp_path / "sweep"))
    assert not (tmp_path / "sweep" / "tune").exists()


@pytest.mark.parametrize("bad", [{"trials": 0}, {"categorical": (0.0, 1.0)}, {"note": 0.1},
                                 {"note": (1.0, 0.1)}, {"label_smoothing": (0.0, 1.0)}])
def test_bad_sweep_config_is_refused(bad):
    with pytest.raises(ConfigError):
        SweepConfig(**bad)


def test_cli_names_a_bad_config_in_one_line(tmp_path):
    bad = tmp_path / "sweep.json"
    bad.write_text(json.dumps({"trials": 2, "grace": 1}))
    cli = subprocess.run([sys.executable, "-m", "tuning.sweep", "--data", str(tmp_path),
                          "--out", str(tmp_path / "out"), "--sweep-config", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2
    assert cli.stderr.startswith("error: sweep config: unknown key(s) ['grace']")
    assert "Traceback" not in cli.stderr
