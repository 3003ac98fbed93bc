"""Every stage's distributed work on a real multi-node Ray: a head and a worker node, as
separate raylets on this machine (``ray.cluster_utils.Cluster``), generating to a local S3
server and training into a folder both nodes share (this machine's disk, as NFS would be
on a real cluster). A node is lost the way a spot instance is: its raylet and every worker
on it die at once, and the autoscaler brings up another."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import local_s3, metrics, spread_train_config

from distributed import dataset as fmt
from distributed.generate import GenerateConfig, GenerateError, generate
from distributed.storage import resolve
from distributed.train import TrainConfig, fit
from synth import RenderConfig

SHORT = RenderConfig(note_dur=0.25, render_dur=0.5)


class TwoNodes:
    """The cluster, and a way to lose its worker node and bring up a fresh one."""

    def __init__(self, cluster, ray):
        self.cluster, self.ray = cluster, ray

    def alive(self) -> set[str]:
        return {n["NodeID"] for n in self.ray.nodes() if n["Alive"]}

    def replace_worker(self) -> str:
        """Kill the worker node (raylet, object store and workers) and add a new one;
        returns the new node's id. From the main thread: starting a node sets signal
        handlers."""
        (old,) = [n for n in self.cluster.worker_nodes]
        self.cluster.remove_node(old, allow_graceful=False)
        new = self.cluster.add_node(num_cpus=2)
        self.cluster.wait_for_nodes()
        return new.node_id


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().execution_no_progress_timeout_s = 120
    cluster.wait_for_nodes()
    try:
        yield TwoNodes(cluster, ray)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def s3():
    with local_s3() as uri:
        yield uri


def _gen(n: int) -> GenerateConfig:
    return GenerateConfig(num_samples=n, render=SHORT, rows_per_file=8, block_rows=4,
                          batch_size=2, num_renderers=4)


@pytest.fixture(scope="module")
def dataset(two_nodes, s3):
    return s3("datasets/both-nodes"), generate(_gen(48), s3("datasets/both-nodes"))


def test_rows_come_from_both_nodes_and_the_manifest_says_which(two_nodes, dataset):
    uri, manifest = dataset
    assert manifest["rows"] == 48 and fmt.verify(resolve(uri)) == []
    by_node = manifest["rows_by_node"]
    assert set(by_node) == two_nodes.alive() and sum(by_node.values()) == 48
    for entry in manifest["files"]:
        assert sum(entry["nodes"].values()) == entry["rows"]
    assert fmt.load_manifest(resolve(uri))["rows_by_node"] == by_node


def test_losing_the_worker_node_mid_generate_loses_and_duplicates_no_row(two_nodes, s3):
    """Ray retries the lost node's tasks on the nodes left; if the job fails all the same,
    the same command resumes it. Either way every id is there once and --verify passes."""
    uri, n = s3("datasets/node-lost"), 160
    loc = resolve(uri)
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(generate, _gen(n), uri)
        deadline = time.time() + 300
        while not fmt.data_files(loc):  # the job is under way once its first file is written
            assert time.time() < deadline and not job.done(), "no file was ever written"
            time.sleep(0.05)
        assert not job.done(), "the job had finished before the node was lost"
        two_nodes.replace_worker()
        try:
            manifest = job.result(timeout=600)
        except GenerateError:  # tolerated by the issue: the same command resumes
            manifest = generate(_gen(n), uri)
    assert manifest["rows"] == n and fmt.verify(loc) == []
    assert sum(manifest["rows_by_node"].values()) == n


def _train(data: str, out, epochs: int) -> TrainConfig:
    return spread_train_config(data, str(out), epochs, max_failures=3)


def test_training_puts_a_worker_on_each_node_and_checkpoints_to_shared_storage(
        two_nodes, dataset, tmp_path):
    run = tmp_path / "run"
    result = fit(_train(dataset[0], run, epochs=2))
    assert result.error is None and (run / "model.pt").is_file()
    lines = metrics(run)
    assert [x["epoch"] for x in lines] == [0, 1]
    assert set(lines[0]["nodes"]) == two_nodes.alive()  # rank 0 on one node, rank 1 the other
    assert len([d for d in (run / "ray").glob("checkpoint_*") if d.is_dir()]) == 2  # shared


def test_losing_the_worker_node_mid_training_resumes_from_the_last_checkpoint(
        two_nodes, dataset, tmp_path):
    run = tmp_path / "run"
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(fit, _train(dataset[0], run, epochs=6))
        deadline = time.time() + 300
        while not ((run / "metrics.jsonl").exists() and metrics(run)):
            assert time.time() < deadline and not job.done(), "no epoch was ever logged"
            time.sleep(0.05)
        assert not job.done(), "training had finished before the node was lost"
        new_node = two_nodes.replace_worker()
        result = job.result(timeout=600)
    assert result.error is None
    lines = metrics(run)
    epochs = [x["epoch"] for x in lines]
    assert epochs == sorted(set(epochs)) and epochs[0] == 0 and epochs[-1] == 5, epochs
    # the run went on with a worker on the new node, from where it was: epoch 0 ran once
    assert any(new_node in x["nodes"] for x in lines), [x["nodes"] for x in lines]
    assert len(epochs) == 6
