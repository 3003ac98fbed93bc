"""Generate on a real multi-node Ray: a head and a worker node, as separate raylets on this
machine (``ray.cluster_utils.Cluster``); rows come from both nodes, and the manifest says
which node rendered which rows."""

import json

import pytest

from distributed import dataset as fmt
from distributed.generate import GenerateConfig, generate
from distributed.storage import resolve
from synth import RenderConfig

SHORT = RenderConfig(note_dur=0.25, render_dur=0.5)


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
        yield ray
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_rows_come_from_both_nodes_and_the_manifest_says_which(two_nodes, tmp_path):
    nodes = {n["NodeID"] for n in two_nodes.nodes() if n["Alive"]}
    assert len(nodes) == 2
    out = tmp_path / "ds"
    manifest = generate(GenerateConfig(num_samples=48, render=SHORT, rows_per_file=8,
                                       block_rows=4, batch_size=2, num_renderers=4), str(out))
    assert manifest["rows"] == 48 and fmt.verify(resolve(str(out))) == []
    by_node = manifest["rows_by_node"]
    assert set(by_node) == nodes and sum(by_node.values()) == 48  # every row from a node
    for entry in manifest["files"]:
        assert sum(entry["nodes"].values()) == entry["rows"]
    assert json.loads((out / "manifest.json").read_text())["rows_by_node"] == by_node
