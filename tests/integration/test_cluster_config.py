"""cluster.yaml passes Ray's own cluster-config validation and carries the placement we document."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


def test_cluster_yaml_passes_ray_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CLUSTER_YAML.read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # raises on a schema error


def test_cluster_yaml_has_a_vqa_node_type_and_installs_janus_ray():
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    types = config["available_node_types"]
    vqa = [t for t in types.values() if t["resources"].get("vqa_gpu")]
    assert vqa and all(t["resources"]["GPU"] >= 1 for t in vqa)
    assert any(t["resources"].get("GPU") and not t["resources"].get("vqa_gpu") for t in types.values())
    assert any("janus-ray" in cmd or "janus_ray" in cmd for cmd in config["setup_commands"])


def test_a_broken_cluster_yaml_is_rejected():
    import jsonschema
    import pytest
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CLUSTER_YAML.read_text())
    config["available_node_types"]["head"]["max_workers"] = "many"
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(prepare_config(config))
