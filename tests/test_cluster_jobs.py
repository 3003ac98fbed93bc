"""The README's cluster flow, driven the way users drive it: ``ray job submit`` to a head
and a worker node started with ``ray start`` (two raylets on this machine), with token
authentication on, as Ray 2.60 sets up a new cluster. Generate to a local S3 server;
train with one Train worker on each node, Ray Train's storage on that S3; sweep into a
folder both nodes share (this machine's disk, as NFS would be on a real cluster); ``serve
deploy`` of ``serve/production.yaml`` serving the model the cluster just trained, read from
S3, and ``curl`` to it.

Each job runs in an upload of the repository (``--working-dir``, as the README says) and
with the ``python`` on the nodes' ``PATH``: the nodes are started from the environment
synthmatch is installed in, as ``cluster.yaml``'s setup does."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
import yaml
from conftest import REPO, free_port, local_s3, metrics, sampled_clip_wav, spread_train_config

from distributed import dataset as fmt
from distributed.storage import exists, read_bytes, resolve
from synth import get_space, parse_preset

RAY_TOKEN = secrets.token_hex(16)  # the cluster's, for the job client and the dashboard
API_TOKEN = secrets.token_hex(16)  # the Serve app's bearer token (production.yaml's env var)


class Head:
    """A head and a worker node started with ``ray start``, as on a real cluster, in an
    environment of their own: this test process never connects to them as a driver, it
    drives them through the CLIs as a user does (``env`` is that user's shell)."""

    def __init__(self, temp_dir: Path):
        self.temp_dir = temp_dir
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": RAY_TOKEN, "SYNTHMATCH_API_TOKEN": API_TOKEN,
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        self.env.pop("RAY_ADDRESS", None)
        self.gcs = f"127.0.0.1:{free_port()}"
        dashboard_port = free_port()
        self.dashboard = f"http://127.0.0.1:{dashboard_port}"
        node = ["--num-cpus", "2", "--object-store-memory", str(400 * 2**20),
                "--temp-dir", str(temp_dir)]
        self.run("ray", "start", "--head", "--port", self.gcs.split(":")[1],
                 "--include-dashboard", "true", "--dashboard-port", str(dashboard_port),
                 "--ray-client-server-port", str(free_port()),
                 "--dashboard-agent-listen-port", str(free_port()), *node)
        self.run("ray", "start", "--address", self.gcs,
                 "--dashboard-agent-listen-port", str(free_port()), *node)
        self.nodes = self.alive()  # no node comes or goes in this module

    def run(self, *cmd: str, timeout: float = 180) -> str:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env,
                           cwd=REPO)
        assert r.returncode == 0, f"{' '.join(cmd[:4])} failed:\n{r.stdout[-4000:]}\n" \
                                  f"{r.stderr[-3000:]}"
        return r.stdout

    def alive(self) -> set[str]:
        nodes = json.loads(self.run("ray", "list", "nodes", "--address", self.dashboard,
                                    "--format", "json"))
        return {n["node_id"] for n in nodes if n["state"] == "ALIVE"}

    def submit(self, *argv: str, timeout: float = 600) -> str:
        """``ray job submit --working-dir <repo> -- python -m ...``; the job's logs."""
        return self.run("ray", "job", "submit", "--address", self.dashboard, "--working-dir",
                        str(REPO), "--", "python", "-m", *argv, timeout=timeout)


def _stop() -> None:
    """Stop this cluster's processes, and no other Ray on the machine, by their PIDs: every
    process that was started with this run's cluster token in its environment (the GCS,
    raylets, dashboard, agents, workers, the client server)."""
    mark = f"RAY_AUTH_TOKEN={RAY_TOKEN}".encode()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and mark in (proc / "environ").read_bytes():
                    os.kill(int(proc.name), sig)
            except (OSError, ProcessLookupError):
                continue
        time.sleep(3)


@pytest.fixture(scope="module")
def head():
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-jobs-"))  # short: Ray's socket paths
    cluster = None
    try:
        cluster = Head(temp_dir)
        assert len(cluster.nodes) == 2
        yield cluster
    finally:
        if cluster is not None:
            subprocess.run(["serve", "shutdown", "-y", "--address", cluster.dashboard],
                           capture_output=True, timeout=120, env=cluster.env)
        _stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def s3():
    with local_s3() as uri:
        yield uri


def _json(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _curl(*args: str) -> tuple[int, bytes]:
    """``curl``'s status and body; status 0 where nothing answered."""
    r = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True,
                       timeout=300)
    body, _, status = r.stdout.rpartition(b"\n")
    return int(status), body


def test_the_job_client_needs_the_clusters_token(head):
    status, _ = _curl("-o", "/dev/null", f"{head.dashboard}/api/jobs/")
    assert status == 401
    status, _ = _curl("-o", "/dev/null", "-H", f"Authorization: Bearer {RAY_TOKEN}",
                      f"{head.dashboard}/api/jobs/")
    assert status == 200


@pytest.fixture(scope="module")
def dataset(head, s3, tmp_path_factory):
    """``ray job submit ... python -m distributed.generate --out s3://...``."""
    uri = s3("datasets/job")
    config = _json(tmp_path_factory.mktemp("gen") / "generate.json", {
        "num_samples": 48, "render": {"note_dur": 0.25, "render_dur": 0.5},
        "rows_per_file": 8, "block_rows": 4, "batch_size": 2, "num_renderers": 4})
    head.submit("distributed.generate", "--config", str(config), "--out", uri)
    return uri


def test_generate_job_writes_rows_from_both_nodes_to_s3(head, dataset):
    manifest = fmt.load_manifest(resolve(dataset))
    assert manifest["rows"] == 48 and fmt.verify(resolve(dataset)) == []
    assert set(manifest["rows_by_node"]) == head.nodes


@pytest.fixture(scope="module")
def trained(head, dataset, s3, tmp_path_factory):
    """``ray job submit ... python -m distributed.train --out s3://...``."""
    run = s3("runs/job")
    config = _json(tmp_path_factory.mktemp("train") / "train.json",
                   spread_train_config(dataset, run, 2).to_dict())
    head.submit("distributed.train", "--config", str(config))
    return run


def test_training_job_has_a_worker_on_each_node_and_checkpoints_to_s3(head, trained):
    out = resolve(trained)
    lines = [json.loads(x) for x in read_bytes(out.fs, out.join("metrics.jsonl")).splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1]
    assert all(set(x["nodes"]) == head.nodes for x in lines)
    found = out.fs.get_file_info(pafs.FileSelector(out.join("ray")))
    checkpoints = [i for i in found if i.type == pafs.FileType.Directory
                   and i.base_name.startswith("checkpoint_")]
    assert len(checkpoints) == 2
    assert exists(out.fs, out.join("model.pt"))


def test_sweep_job_runs_its_trials_across_both_nodes(head, dataset, tmp_path):
    # the sweep picks each trial's best epoch by the distance heard: two presets to hear
    base = _json(tmp_path / "base.json",
                 spread_train_config(dataset, "", 2, audio_eval_presets=2).to_dict())
    out = tmp_path / "sweep"
    head.submit("tuning.sweep", "--data", dataset, "--out", str(out), "--config", str(base),
                "--trials", "2", "--max-concurrent", "2", "--epochs", "1", "--no-wandb")
    trials = sorted(p for p in (out / "trials").iterdir() if p.is_dir())
    assert len(trials) == 2
    for trial in trials:
        (line,) = metrics(trial)
        assert set(line["nodes"]) == head.nodes
    assert len((out / "trials.csv").read_text().splitlines()) == 3  # a header, two trials
    assert (out / "model.pt").is_file()  # the best trial's model
    assert json.loads((out / "best.json").read_text())["placement"] == "STRICT_SPREAD"


def test_serve_deploy_of_the_production_config_answers_curl(head, trained, s3, tmp_path):
    """``serve deploy serve/production.yaml`` with three changes for two nodes on one small
    machine: the proxy on the head only (both nodes share this machine's ports), a free
    port, and a quarter CPU and one replica per deployment; it serves the model the
    training job wrote to S3, which each replica fetches from there."""
    config = yaml.safe_load((REPO / "serve" / "production.yaml").read_text())
    port = free_port()
    config["proxy_location"] = "HeadOnly"
    config["http_options"].update(host="127.0.0.1", port=port)
    (app,) = config["applications"]
    app["args"].update(checkpoint=s3("runs/job/model.pt"), demo=False)  # as trained wrote it
    for deployment in app["deployments"]:
        deployment["ray_actor_options"]["num_cpus"] = 0.25
        if "autoscaling_config" in deployment:
            deployment["autoscaling_config"].update(min_replicas=1, max_replicas=1)
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump(config))
    head.run("serve", "deploy", str(path), "--address", head.dashboard)

    base, auth = f"http://127.0.0.1:{port}", f"Authorization: Bearer {API_TOKEN}"
    deadline, status = time.time() + 300, 0
    while status != 200:  # 0 until the proxy listens, 503 while the app starts
        assert time.time() < deadline, "the app never answered /v1/info"
        time.sleep(1)
        status, body = _curl("-H", auth, f"{base}/v1/info")
    info = json.loads(body)
    assert info["auth"] is True and info["model"]["space_id"] == get_space("core").id
    assert _curl(f"{base}/v1/info")[0] == 401

    clip = tmp_path / "clip.wav"
    clip.write_bytes(sampled_clip_wav())
    status, body = _curl("-H", auth, "-F", f"audio=@{clip}", "-F", "budget_seconds=1",
                         f"{base}/v1/match")
    assert status == 200, body[:500]
    out = json.loads(body)
    preset = parse_preset(out["preset"]["content"], source="api")
    assert "synthmatch" in preset.data["preset_name"]
    assert out["search"]["rendered"] >= 1 and np.isfinite(out["distance"]["mrstft"])
