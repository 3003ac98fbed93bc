import contextlib
import os
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
