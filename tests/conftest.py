import contextlib
import io
import json
import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
REAL_PRESETS = REPO.parent / "shared" / "real-presets"


@pytest.fixture(scope="session")
def real_presets() -> list[Path]:
    paths = sorted(REAL_PRESETS.glob("*.vital"))
    assert paths, f"the real presets are expected at {REAL_PRESETS}"
    return paths


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained small network's checkpoint (core scope), for plumbing tests: its
    answers are arbitrary, and may be silent."""
    from model.checkpoint import save_checkpoint
    from model.features import FeatureConfig
    from model.loss import LossConfig
    from model.network import MatchNet, ModelConfig
    from synth import get_space

    space, features, cfg = get_space("core"), FeatureConfig(), ModelConfig(channels=(8, 16),
                                                                           hidden=32)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    return save_checkpoint(path, MatchNet(space, features, cfg), space, features, cfg,
                           LossConfig(), {"epoch": 0, "note": "untrained, for plumbing tests"})


def pids_with(text: bytes) -> list[int]:
    """Processes whose command line contains ``text`` (Ray names a worker after what it
    runs, e.g. ``ray::MapBatches(render_ids)`` or ``ray::RayTrainWorker``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


@contextlib.contextmanager
def local_ray(dashboard: bool = False, no_progress_timeout_s: float = 180):
    """One local Ray for a test module, with more logical CPUs than the 2 cores (actor pools
    and Train workers beside read and write tasks would starve otherwise); Ray Data fails a
    stalled pipeline after ``no_progress_timeout_s`` instead of hanging."""
    import ray

    ray.init(num_cpus=4, include_dashboard=dashboard, log_to_driver=False)
    ray.data.DataContext.get_current().execution_no_progress_timeout_s = no_progress_timeout_s
    try:
        yield ray
    finally:
        ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sampled_clip_wav() -> bytes:
    """A 2 s render (note 57) of the first audible sampled ``core`` preset, as WAV bytes."""
    import soundfile as sf

    from synth import Renderer, Sampler, SamplerConfig

    sampler = Sampler(SamplerConfig(seed=11))
    renderer = Renderer(sampler.space)
    for i in range(20):
        r = renderer.render(sampler.sample(i).patch, 57)
        if r.valid:
            buf = io.BytesIO()
            sf.write(buf, r.audio, renderer.config.sample_rate, format="WAV")
            return buf.getvalue()
    raise AssertionError("no audible sample in 20 draws")


def metrics(run: Path) -> list[dict]:
    """A training run's ``metrics.jsonl``, a dict per epoch."""
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def spread_train_config(data: str, out: str, epochs: int, **overrides):
    """A small training run with one worker on each of two nodes (STRICT_SPREAD), half a CPU
    each so that the dataset's tasks find room beside them."""
    from distributed.train import TrainConfig
    from model.features import FeatureConfig
    from model.network import ModelConfig

    return TrainConfig(**{
        "data": data, "out": out, "workers": 2, "cpus_per_worker": 0.5,
        "placement": "STRICT_SPREAD", "batch_size": 8, "epochs": epochs,
        "features": FeatureConfig(duration_s=0.5, n_mels=32, n_fft=1024, hop=512),
        "model": ModelConfig(channels=(8, 16), hidden=32, dropout=0.0),
        "audio_eval_presets": 0, "val_fraction": 0.25, "shuffle_buffer": 0, "wandb": False,
        "patience": 100, **overrides})


@contextlib.contextmanager
def local_s3():
    """A local S3 server (moto) with a bucket ``synthmatch``; yields a function from a key to
    its URI, credentials and endpoint included, as pyarrow and ``--out`` take it."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test",
                 ).create_bucket(Bucket="synthmatch")
    try:
        yield lambda key: (f"s3://test:test@synthmatch/{key}?endpoint_override={host}:{port}"
                           "&scheme=http&region=us-east-1")
    finally:
        server.stop()


def tiny_dataset(folder: Path) -> Path:
    """48 short renders (0.5 s note, 0.75 s render) generated on the running Ray."""
    from distributed.generate import GenerateConfig, generate
    from synth import RenderConfig

    generate(GenerateConfig(num_samples=48, render=RenderConfig(note_dur=0.5, render_dur=0.75),
                            rows_per_file=16, block_rows=8), str(folder))
    return folder
