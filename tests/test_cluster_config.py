from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_cluster_yaml_passes_rays_schema():
    validate_config(prepare_config(yaml.safe_load(CLUSTER_YAML.read_text())))


def test_the_schema_check_catches_a_broken_config():
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    config["max_workers"] = "many"
    with pytest.raises(jsonschema.ValidationError, match="'many' is not of type 'integer'"):
        validate_config(prepare_config(config))


def test_render_workers_are_spot_cpus_from_zero_and_training_has_gpus():
    types = yaml.safe_load(CLUSTER_YAML.read_text())["available_node_types"]
    render, train = types["render_cpu"], types["train_gpu"]
    assert render["min_workers"] == 0 and train["min_workers"] == 0
    assert render["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert render["node_config"]["InstanceType"].startswith("c")  # compute-optimised CPUs
    assert train["node_config"]["InstanceType"].startswith(("g", "p"))  # NVIDIA GPU families
