"""Resource planning without Ray: GPU shares, CPU fallback, custom resources, refusals."""

from __future__ import annotations


import pytest

from janus_ray.config import MetricSpec, RunConfig
from janus_ray.errors import ConfigError
from janus_ray.pipeline import metric_plans
from janus_ray.plan import ClusterShape, NodeShape, plan_run

METRICS = ["hpsv2", "vqascore", "clipscore", "itmscore", "pickscore", "imagereward"]


def config(**kwargs) -> RunConfig:
    return RunConfig(folders=["x"], weights_root=None, metrics=list(METRICS), **kwargs)


def plan_metrics(cfg: RunConfig, cluster_gpus: int, cluster_cpus: float, gpu_memory_gb: float = 80.0, shape=None):
    """Every phase's MetricPlans for a one-node cluster (the planner is pure: no Ray here)."""
    shape = shape or ClusterShape.uniform(cluster_gpus, gpu_memory_gb if cluster_gpus else 0.0, cluster_cpus)
    plan = plan_run(cfg, shape, measured=False)
    return [p for phase in plan.phases for p in metric_plans(phase, cfg)]


def test_without_gpus_everything_runs_on_cpu():
    cfg = config(cpu_layout="per-metric")
    plans = plan_metrics(cfg, cluster_gpus=0, cluster_cpus=2)
    assert all(p.device == "cpu" and p.num_gpus == 0 for p in plans)
    assert sum(p.num_cpus for p in plans) <= 2


def test_with_gpus_vqa_takes_whole_gpus_and_small_models_share_one():
    plans = {p.metric: p for p in plan_metrics(config(), cluster_gpus=2, cluster_cpus=16)}
    assert plans["vqascore"].num_gpus == 1 and plans["vqascore"].device == "cuda"
    small = [p.num_gpus for m, p in plans.items() if m != "vqascore"]
    assert sum(small) == pytest.approx(1.0, abs=1e-3)


def test_device_cpu_forces_cpu_even_with_gpus():
    plans = plan_metrics(config(device="cpu"), cluster_gpus=4, cluster_cpus=16)
    assert all(p.num_gpus == 0 for p in plans)


def test_device_cuda_without_gpus_is_refused():
    with pytest.raises(ConfigError, match="no GPUs"):
        plan_metrics(config(device="cuda"), cluster_gpus=0, cluster_cpus=2)


def test_custom_resource_missing_on_a_fixed_cluster_is_refused_and_planned_on_autoscaling():
    cfg = config(metric_specs={"vqascore": MetricSpec(resources={"vqa_gpu": 1})})
    with pytest.raises(ConfigError, match="vqa_gpu"):
        plan_metrics(cfg, cluster_gpus=1, cluster_cpus=8)
    grows = ClusterShape(nodes=(NodeShape(gpus=1, gpu_memory_gb=80, cpus=8),), can_autoscale=True,
                         node_types=(NodeShape(gpus=1, gpu_memory_gb=80, cpus=8, resources={"vqa_gpu": 1}),))
    plans = {p.metric: p for p in plan_metrics(cfg, 0, 0, shape=grows)}
    assert plans["vqascore"].resources == {"vqa_gpu": 1}
    present = ClusterShape(nodes=(NodeShape(gpus=2, gpu_memory_gb=80, cpus=8, resources={"vqa_gpu": 1}),))
    assert plan_metrics(cfg, 0, 0, shape=present)


def test_explicit_batch_size_and_replicas_are_kept():
    cfg = config(metric_specs={"clipscore": MetricSpec(batch_size=5, replicas=3, num_gpus=0.2)})
    plan = next(p for p in plan_metrics(cfg, cluster_gpus=2, cluster_cpus=8) if p.metric == "clipscore")
    assert (plan.batch_size, plan.replicas, plan.num_gpus) == (5, 3, 0.2)


def test_an_image_that_cannot_be_read_becomes_a_failed_row_with_its_reason(tmp_path):
    from janus_ray.manifest import FolderScan, ManifestRow
    from janus_ray.table import manifest_frame

    good = tmp_path / "a.png"
    good.write_bytes(b"some bytes")
    rows = [
        ManifestRow(folder=str(tmp_path), prompt_idx=0, prompt="p", image_path=str(good), rel_path="a.png", sample=0),
        ManifestRow(folder=str(tmp_path), prompt_idx=1, prompt="q", image_path=str(tmp_path / "gone.png"),
                    rel_path="gone.png", sample=0),
        ManifestRow(folder=str(tmp_path), prompt_idx=2, prompt="r", image_path=str(tmp_path / "link.png"),
                    rel_path="link.png", sample=0),
    ]
    (tmp_path / "link.png").symlink_to(tmp_path / "nowhere.png")  # a broken symbolic link
    frame = manifest_frame([FolderScan(folder=str(tmp_path), convention="sidecar-txt", rows=rows, warnings=[])])
    assert frame.loc[0, "error"] is None and len(frame.loc[0, "image_sha256"]) == 64
    assert frame.loc[1, "error"] == "unreadable image: FileNotFoundError: No such file or directory"
    assert frame.loc[2, "error"] == f"unreadable image: broken symbolic link to {tmp_path / 'nowhere.png'}"


def test_phase_results_merge_into_one_row_per_pair():
    import pandas as pd

    from janus_ray.pipeline import _merge_phases

    first = pd.DataFrame({"row_id": [0, 1], "decode_error": ["", ""], "_jr_out_vqascore": [0.5, 0.7]})
    second = pd.DataFrame({"row_id": [1, 0], "decode_error": ["", ""], "_jr_out_clipscore": [30.0, 20.0]})
    (merged,) = _merge_phases([[first], [second]])
    merged = merged.set_index("row_id").sort_index()
    assert list(merged.index) == [0, 1]
    assert list(merged["_jr_out_vqascore"]) == [0.5, 0.7] and list(merged["_jr_out_clipscore"]) == [20.0, 30.0]


def test_every_phase_becomes_metric_plans():
    cfg = config()
    cfg.resolve_names()
    plan = plan_run(cfg, ClusterShape.uniform(1, 48, 16), measured=False)
    phases = [metric_plans(phase, cfg) for phase in plan.phases]
    assert len(phases) >= 2
    assert sorted(p.metric for ph in phases for p in ph) == sorted(METRICS)
    assert all(p.device == "cuda" and 0 < p.num_gpus <= 1 for ph in phases for p in ph)
