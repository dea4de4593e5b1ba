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


def test_every_node_starts_with_token_auth_and_gets_the_same_token():
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command, command
    # the launcher copies file_mounts to the head and to every worker it starts
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


def test_the_planner_fills_the_node_types_cluster_yaml_declares():
    from janus_ray.config import MetricSpec, RunConfig
    from janus_ray.plan import plan_run, shape_from_cluster_yaml

    shape = shape_from_cluster_yaml(yaml.safe_load(CLUSTER_YAML.read_text()))
    config = RunConfig(folders=["x"], metric_specs={"vqascore": MetricSpec(resources={"vqa_gpu": 1})})
    config.validate(require_inputs=False)
    plan = plan_run(config, shape, measured=False)
    assert len(plan.phases) == 1 and plan.autoscale
    assert plan.gpus_used == shape.gpus_total
    small = [m for m in config.metrics if m != "vqascore"]
    # the five small models fit next to each other on one gpu_worker GPU
    gpu_worker = next(n for n in shape.planned_nodes() if n.name == "gpu_worker")
    assert sum(plan.phases[0].pools[m].gpu_memory_gb for m in small) <= 0.9 * gpu_worker.gpu_memory_gb
