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
