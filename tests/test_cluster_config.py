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
