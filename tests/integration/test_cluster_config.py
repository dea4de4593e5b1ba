"""cluster.yaml passes Ray's own cluster-config validation and carries the placement we document."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


def ray_cluster_schema() -> dict:
    """The JSON schema Ray ships for cluster configs (``ray/autoscaler/ray-schema.json``, the one
    ``ray up`` validates against), read as package data: no private Ray module is imported."""
    return json.loads((importlib.resources.files("ray.autoscaler") / "ray-schema.json").read_text(encoding="utf-8"))


def test_cluster_yaml_passes_ray_validation():
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    jsonschema.validate(config, ray_cluster_schema())  # raises on a schema error
    assert config["head_node_type"] in config["available_node_types"]


def test_cluster_yaml_has_a_vqa_node_type_and_installs_janus_ray():
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    types = config["available_node_types"]
    vqa = [t for t in types.values() if t["resources"].get("vqa_gpu")]
    assert vqa and all(t["resources"]["GPU"] >= 1 for t in vqa)
    assert any(t["resources"].get("GPU") and not t["resources"].get("vqa_gpu") for t in types.values())
    assert any("janus-ray" in cmd or "janus_ray" in cmd for cmd in config["setup_commands"])


def test_a_broken_cluster_yaml_is_rejected():
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    config["available_node_types"]["head"]["max_workers"] = "many"
    with pytest.raises(jsonschema.ValidationError, match="'many' is not of type 'integer'"):
        jsonschema.validate(config, ray_cluster_schema())
