"""The placement planner (janus_ray/plan.py) on many cluster shapes, without Ray."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from janus_ray.config import MetricSpec, RunConfig
from janus_ray.errors import ConfigError
from janus_ray.metrics.costs import load_measured_costs
from janus_ray.plan import (
    DECODE_IMAGES_PER_CPU_S,
    GPU_MEMORY_FRACTION,
    ClusterShape,
    NodeShape,
    demand_for,
    make_plan,
    plan_run,
    shape_from_cluster_yaml,
)

SIX = ["hpsv2", "vqascore", "clipscore", "itmscore", "pickscore", "imagereward"]
SMALL = ["hpsv2", "clipscore", "itmscore", "pickscore", "imagereward"]
CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"
FIXTURE_WEIGHTS = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "weights"


def cfg(metrics=None, **specs) -> RunConfig:
    config = RunConfig(folders=["x"], weights_root=None, metrics=list(metrics or SIX),
                       metric_specs={m: MetricSpec(**s) for m, s in specs.items()})
    config.resolve_names()
    return config


def plan_for(gpus, mem, cpus, metrics=None, nodes=1, **specs):
    return plan_run(cfg(metrics, **specs), ClusterShape.uniform(gpus, mem, cpus, nodes), measured=False)


def metrics_of(plan) -> list[str]:
    return [m for phase in plan.phases for m in phase.pools]


def assert_fits(plan, mem_gb, gpus):
    for phase in plan.phases:
        assert phase.gpu_memory_gb_per_gpu <= mem_gb * GPU_MEMORY_FRACTION + 1e-6
        assert phase.gpus_used <= gpus + 1e-6
        assert all(p.num_gpus <= 1 for p in phase.pools.values())


def test_one_80gb_gpu_holds_all_six_in_one_phase():
    plan = plan_for(1, 80, 16)
    assert len(plan.phases) == 1 and sorted(metrics_of(plan)) == sorted(SIX)
    assert_fits(plan, 80, 1)
    assert plan.gpus_used == pytest.approx(1.0, abs=1e-3)


def test_one_48gb_gpu_runs_the_xxl_and_the_small_models_in_phases():
    plan = plan_for(1, 48, 16)
    assert len(plan.phases) >= 2 and sorted(metrics_of(plan)) == sorted(SIX)  # each metric exactly once
    assert_fits(plan, 48, 1)
    assert any("phases" in w for w in plan.warnings)


def test_two_24gb_gpus_hold_the_six_with_the_xl_in_one_phase_spread_over_both():
    """A new user's trial: 4 models on GPU 1, CLIPScore alone on GPU 2 and ImageReward pushed to a
    second phase (17.9 img/s), where all six fit at once. When no layout giving metrics whole GPUs
    fits one phase, the packed group spreads over the whole GPUs."""
    metrics = ["clip-flant5-xl", "clipscore", "itmscore", "hpsv2", "pickscore", "imagereward"]
    plan = plan_for(2, 24, 8, metrics)
    assert len(plan.phases) == 1 and sorted(metrics_of(plan)) == sorted(SIX)
    assert_fits(plan, 24, 2)
    assert not any("phases" in w for w in plan.warnings)
    one_per_gpu = plan_for(2, 80, 16)  # whole GPUs still come first when they fit
    assert one_per_gpu.phases[0].pools["vqascore"].num_gpus == 1


def test_one_24gb_gpu_refuses_the_xxl_naming_need_capacity_and_ways_out():
    with pytest.raises(ConfigError) as err:
        plan_for(1, 24, 8)
    message = str(err.value)
    for part in ("vqascore needs ~", "GB", "24 GB", "clip-flant5-xl", "--metrics without vqascore"):
        assert part in message


def test_one_24gb_gpu_plans_the_xl():
    plan = plan_for(1, 24, 8, metrics=["clip-flant5-xl", *SMALL])
    assert sorted(metrics_of(plan)) == sorted(["vqascore", *SMALL])
    assert_fits(plan, 24, 1)
    xl = next(ph.pools["vqascore"] for ph in plan.phases if "vqascore" in ph.pools)
    assert xl.gpu_memory_gb < 15  # the 6.3 GB XL, not the 23 GB XXL


def test_eight_80gb_gpus_are_all_used_and_vqa_scales_out():
    one, eight = plan_for(1, 80, 16), plan_for(8, 80, 64)
    assert len(eight.phases) == 1 and eight.gpus_used == pytest.approx(8.0, abs=1e-3)
    pools = eight.phases[0].pools
    assert pools["vqascore"].replicas > 1 and pools["vqascore"].num_gpus == 1
    assert_fits(eight, 80, 8)
    assert eight.images_per_s > 4 * one.images_per_s
    # the min over metrics is what the plan reports
    assert eight.phases[0].images_per_s == pytest.approx(min(p.rate for p in pools.values()))


def test_two_identical_nodes_double_the_gpus():
    plan = plan_for(4, 80, 32, nodes=2)
    assert plan.gpus_total == 8 and plan.gpus_used == pytest.approx(8.0, abs=1e-3)


def test_without_gpus_every_metric_runs_fused_on_cpu():
    plan = plan_for(0, 0, 4)
    assert plan.layout == "cpu-fused" and plan.gpus_used == 0
    assert all(p.num_gpus == 0 and p.replicas == 4 for p in plan.phases[0].pools.values())


def test_the_fused_cpu_estimate_follows_the_cores_the_actors_compute_on():
    """New user's trial: `--cpus 1` and `--cpus 2` printed the same estimate (max(1, cpus - 1) cores)."""
    def rate(cpus, replicas=None):
        config = cfg()
        config.cpu_replicas = replicas
        return plan_run(config, ClusterShape.uniform(0, 0, cpus), measured=False).phases[0].images_per_s

    assert rate(2) == pytest.approx(2 * rate(1))
    assert rate(4, replicas=1) == pytest.approx(rate(4))  # one actor, 4 torch threads
    assert rate(4, replicas=3) == pytest.approx(3 * rate(1))  # 3 actors of 1 thread: a core idle


def test_per_metric_cpu_layout_leaves_cpus_for_decoding():
    config = cfg()
    config.cpu_layout = "per-metric"
    plan = plan_run(config, ClusterShape.uniform(0, 0, 2), measured=False)
    assert sum(p.num_cpus * p.replicas for p in plan.phases[0].pools.values()) <= 2


def test_device_cpu_ignores_gpus_and_device_cuda_without_gpus_is_refused():
    config = cfg()
    config.device = "cpu"
    assert plan_run(config, ClusterShape.uniform(4, 80, 16), measured=False).gpus_used == 0
    config.device = "cuda"
    with pytest.raises(ConfigError, match="no GPUs"):
        plan_run(config, ClusterShape.uniform(0, 0, 16), measured=False)


def test_fractional_leftover_of_an_override_is_shared_by_the_others():
    plan = plan_for(1, 80, 16, vqascore={"num_gpus": 0.5})
    pools = plan.phases[0].pools
    assert pools["vqascore"].num_gpus == 0.5
    small = [pools[m].num_gpus for m in SMALL]
    assert all(s > 0 for s in small) and 0.5 + sum(small) <= 1.0 + 1e-9
    assert_fits(plan, 80, 1)


def test_a_node_without_enough_cpus_is_refused_with_the_counts():
    with pytest.raises(ConfigError, match=r"has 1 CPU\(s\) for up to \d+ GPU actor"):
        plan_for(8, 80, 1)


def test_few_cpus_shrink_gpu_actor_cpus_and_warn_that_decoding_limits():
    plan = plan_for(8, 80, 2)
    assert all(p.num_cpus < 1 for p in plan.phases[0].pools.values())
    assert any("decoding limits" in w for w in plan.warnings)


def test_a_decode_actor_never_takes_the_cpu_a_gpu_actor_needs_on_one_cpu_gpu_nodes():
    """Ray Data spreads the first decode actor onto any node before a GPU actor exists: on a GPU node
    with 1 CPU, decode + that node's GPU actor must fit in it (1 CPU each hung the 3-node eval)."""
    shape = ClusterShape(nodes=(NodeShape(cpus=1, name="head"), NodeShape(gpus=1, gpu_memory_gb=80, cpus=1),
                                NodeShape(gpus=1, gpu_memory_gb=80, cpus=1, resources={"vqa_gpu": 1})))
    plan = plan_run(cfg(["clipscore", "imagereward"], clipscore={"resources": {"vqa_gpu": 1}}), shape,
                    measured=False)
    pools = plan.phases[0].pools
    assert all(p.num_gpus == 1 and p.replicas == 1 for p in pools.values())  # one GPU actor per node
    assert plan.decode.num_cpus > 0
    assert all(plan.decode.num_cpus + p.num_cpus <= 1 + 1e-9 for p in pools.values())
    assert plan.decode.max_replicas >= 1


def test_gpu_nodes_with_no_cpu_left_for_a_decode_actor_are_refused():
    with pytest.raises(ConfigError, match=r"has 0.1 CPU\(s\) for up to 2 GPU actor\(s\) at 0.05 CPU each and "
                                          r"nothing left for a decode actor"):
        plan_for(1, 80, 0.1, metrics=["clipscore", "imagereward"])


def test_overrides_asking_for_more_gpus_than_the_cluster_are_refused_with_the_sums():
    with pytest.raises(ConfigError, match=r"vqascore 3 x 1 = 3 GPUs; the cluster has 2"):
        plan_for(2, 80, 16, vqascore={"num_gpus": 1, "replicas": 3})


def test_overrides_packing_beyond_one_gpus_memory_are_refused_with_the_sums():
    with pytest.raises(ConfigError, match=r"onto one GPU of 40 GB \(36.0 GB usable\)"):
        plan_for(1, 40, 16, metrics=["vqascore", "pickscore"], vqascore={"num_gpus": 0.5},
                 pickscore={"num_gpus": 0.5, "batch_size": 256})


def test_overrides_win():
    plan = plan_for(4, 80, 32, metrics=["vqascore", "clipscore"], vqascore={"replicas": 2, "batch_size": 4},
                    clipscore={"num_gpus": 0.5})
    pools = plan.phases[0].pools
    assert pools["vqascore"].replicas == 2 and pools["vqascore"].batch_size == 4
    assert pools["clipscore"].num_gpus == 0.5


def test_custom_resource_missing_is_refused_on_a_fixed_cluster_and_planned_when_a_node_type_brings_it():
    with pytest.raises(ConfigError, match="0 vqa_gpu"):
        plan_for(1, 80, 16, vqascore={"resources": {"vqa_gpu": 1}})
    shape = ClusterShape(
        nodes=(NodeShape(gpus=1, gpu_memory_gb=80, cpus=16),), can_autoscale=True,
        node_types=(NodeShape(gpus=2, gpu_memory_gb=80, cpus=16, resources={"vqa_gpu": 2}, count=1),),
    )
    plan = plan_run(cfg(vqascore={"resources": {"vqa_gpu": 1}}), shape, measured=False)
    assert plan.autoscale and plan.phases[0].pools["vqascore"].resources == {"vqa_gpu": 1}


def test_the_cluster_yaml_shape_is_planned_in_one_phase_on_every_gpu():
    shape = shape_from_cluster_yaml(yaml.safe_load(CLUSTER_YAML.read_text()))
    assert shape.can_autoscale and shape.gpus_total >= 2
    plan = plan_run(cfg(vqascore={"resources": {"vqa_gpu": 1}}), shape, measured=False)
    assert len(plan.phases) == 1 and sorted(metrics_of(plan)) == sorted(SIX)
    assert plan.gpus_used == pytest.approx(shape.gpus_total, abs=0.01)


def test_json_schema():
    data = plan_for(1, 48, 16).to_json()
    assert set(data) == {"gpus_total", "gpus_used", "cpus_total", "phases", "images_per_s", "warnings"}
    for phase in data["phases"]:
        assert set(phase) == {"metrics", "gpu_memory_gb_per_gpu", "images_per_s"}
        for pool in phase["metrics"].values():
            assert set(pool) == {"replicas", "num_gpus", "num_cpus", "batch_size", "gpu_memory_gb", "images_per_s"}
    json.dumps(data)


def test_weight_files_when_present_replace_the_architecture_size():
    arch = demand_for("clipscore", {}, dtype=None, on_gpu=True)
    files = demand_for("clipscore", {}, dtype=None, on_gpu=True, weights_root=FIXTURE_WEIGHTS)
    assert arch.weights_gb == pytest.approx(4.28e8 * 4 / 1e9)
    assert files.weights_gb < 0.5  # the fixture's tiny random model


def test_measured_table_replaces_the_estimates(tmp_path):
    path = tmp_path / "measured_costs.json"
    path.write_text(json.dumps({"gpu": "NVIDIA H200", "measured_at": "2026-11-30", "metrics": {"clipscore": {
        "dtype": "float32", "batch_size": 64, "images_per_s": 321.0, "peak_gpu_memory_gb": 9.5,
        "weights_gb": 1.75, "activation_gb_per_image": 0.11}}}))
    table = load_measured_costs(path)
    assert table.gpu == "NVIDIA H200" and table.metrics["clipscore"].images_per_s == 321.0
    demand = demand_for("clipscore", {}, dtype=None, on_gpu=True, measured=table)
    assert (demand.images_per_s_gpu, demand.weights_gb, demand.activation_gb_per_image, demand.source) == (
        321.0, 1.75, 0.11, "measured")
    other = demand_for("pickscore", {}, dtype=None, on_gpu=True, measured=table)
    assert other.source == "estimate"
    assert load_measured_costs(tmp_path / "absent.json") is None


def test_a_malformed_measured_table_names_the_field(tmp_path):
    path = tmp_path / "measured_costs.json"
    path.write_text(json.dumps({"metrics": {"clipscore": {"dtype": "float32"}}}))
    with pytest.raises(ConfigError, match="metrics.clipscore.batch_size"):
        load_measured_costs(path)


@pytest.mark.slow  # a fresh interpreter importing torch: seconds of CPU
def test_plan_module_imports_no_ray():
    import subprocess

    code = "import sys, janus_ray.plan; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_make_plan_from_hand_made_demands():
    demands = [demand_for(m, {}, dtype=None, on_gpu=True) for m in ("clipscore", "imagereward")]
    plan = make_plan(ClusterShape.uniform(2, 24, 8), demands)
    assert plan.gpus_used == pytest.approx(2.0, abs=1e-3)


def test_replicas_without_a_gpu_share_take_whole_gpus_or_a_fitting_slice():
    four = plan_for(4, 80, 32, vqascore={"replicas": 3}).phases[0].pools
    assert (four["vqascore"].replicas, four["vqascore"].num_gpus) == (3, 1.0)
    one = plan_for(1, 80, 16, clipscore={"replicas": 3})
    pools = one.phases[0].pools
    assert pools["clipscore"].replicas == 3
    assert sum(p.replicas * p.num_gpus for p in pools.values()) <= 1.0 + 1e-9


def test_the_decode_warning_only_when_the_cpus_left_cannot_feed_the_plans_rate():
    """1 x 80 GB with 1 CPU: under 1 CPU is left for decoding, but ~0.7 CPU decodes faster than the
    GPU scores; the warning said '~18 img/s cannot keep the GPUs fed (~8 img/s)'."""
    for cpus in (1, 16):
        plan = plan_for(1, 80, cpus)
        fed = [w for w in plan.warnings if "keep the GPUs fed" in w]
        assert not fed, fed
    starved = plan_for(8, 80, 4, metrics=["clipscore"])  # 8 GPUs of CLIP, 4 CPUs: decoding limits
    assert [w for w in starved.warnings if "keep the GPUs fed" in w]


def test_the_decode_warning_counts_the_decode_actors_the_plan_starts():
    """3.6 CPUs left start 3 decode actors (one per whole CPU): the warning, the decode pool and the
    plan's rate all use 3, not 3.6 (the warning said '3.6 CPU(s) left (~90 img/s)' beside 'up to 3
    actor(s)')."""
    plan = plan_for(8, 80, 4, metrics=["clipscore"])
    (warning,) = [w for w in plan.warnings if "keep the GPUs fed" in w]
    assert plan.decode.max_replicas == 3
    assert warning.startswith("3.6 CPU(s) left for decoding: 3 decode actor(s), ~75 img/s")
    assert plan.images_per_s == pytest.approx(3 * DECODE_IMAGES_PER_CPU_S)


def test_replicas_on_every_gpu_leave_the_other_metrics_spread_over_the_slices_left():
    # 4 x 40 GB, --replicas vqascore=4: one VQAScore replica (~26 GB) per GPU leaves ~10 GB on each,
    # not enough for the five other models together (~19 GB), enough for two of them on each GPU.
    # This used to be refused ("clipscore needs 3.4 GB per actor and 1 such GPU(s)").
    plan = plan_for(4, 40, 4, vqascore={"replicas": 4})
    pools = plan.phases[0].pools
    assert set(pools) == set(SIX) and len(plan.phases) == 1
    assert pools["vqascore"].replicas == 4
    usable = 40 * GPU_MEMORY_FRACTION
    assert plan.phases[0].gpu_memory_gb_per_gpu <= usable
    # Ray places by share only: whatever it does, no GPU may get more actors than its memory holds
    vqa = pools["vqascore"]
    assert int(1 / vqa.num_gpus + 1e-9) * vqa.gpu_memory_gb <= usable  # never two VQAScore replicas on one GPU
    others = [p for m, p in pools.items() if m != "vqascore"]
    per_gpu = int((1 - vqa.num_gpus) / min(p.num_gpus for p in others) + 1e-9)
    heaviest = sorted((p.gpu_memory_gb for p in others), reverse=True)[:per_gpu]
    assert vqa.gpu_memory_gb + sum(heaviest) <= usable
    assert sum(p.replicas * p.num_gpus for p in pools.values()) <= 4 + 1e-9


def test_a_replica_slice_is_never_thin_enough_for_more_replicas_per_gpu_than_memory_holds():
    # 2 x 80 GB, --replicas vqascore=3: an equal slice (2 / (3 + 5) = 0.25) would let Ray put three
    # ~28 GB replicas on one GPU (72 GB usable); the share must keep it to two.
    pools = plan_for(2, 80, 16, vqascore={"replicas": 3}).phases[0].pools
    vqa = pools["vqascore"]
    assert vqa.replicas == 3
    assert int(1 / vqa.num_gpus + 1e-9) * vqa.gpu_memory_gb <= 80 * GPU_MEMORY_FRACTION
    assert sum(p.replicas * p.num_gpus for p in pools.values()) <= 2 + 1e-9


@pytest.mark.parametrize("mem", [70, 80])
def test_the_printed_fullest_gpu_is_the_worst_case_of_rays_placement_by_share(mem):
    # 2 GPUs, --replicas vqascore=3: one GPU holds two VQAScore replicas, and Ray may put packed
    # actors on it too (by share, not by the plan's intent): that GPU's worst case is what counts
    phase = plan_for(2, mem, 8, vqascore={"replicas": 3}).phases[0]
    vqa = phase.pools["vqascore"]
    others = [p for m, p in phase.pools.items() if m != "vqascore"]
    share = min(p.num_gpus for p in others)
    worst = 0.0
    for n_vqa in range(0, min(vqa.replicas, int(1 / vqa.num_gpus + 1e-9)) + 1):
        k = int((1 - n_vqa * vqa.num_gpus) / share + 1e-9)
        heaviest = sorted((p.gpu_memory_gb for p in others), reverse=True)[:k]
        worst = max(worst, n_vqa * vqa.gpu_memory_gb + sum(heaviest))
    assert worst <= mem * GPU_MEMORY_FRACTION + 1e-6
    assert phase.gpu_memory_gb_per_gpu >= worst - 0.05  # was 58.1 GB printed for a 71.8 GB worst case


def test_replicas_whose_worst_case_overfills_a_gpu_are_refused():
    # 2 x 64 GB: two VQAScore replicas (51.8 GB) leave room for one small actor, but the share that
    # keeps the other GPU's five actors leaves room for two on this one (63.6 GB > 57.6 usable)
    with pytest.raises(ConfigError, match="cannot be placed"):
        plan_for(2, 64, 8, vqascore={"replicas": 3})


def test_a_cpu_plan_table_shows_no_gpu_columns():
    """Without GPUs the table printed 'fullest GPU ~0.0 GB' and a GPU and a GB/actor column of zeros."""
    table = plan_for(0, 80, 4).table()
    assert "fullest GPU" not in table and "GB/actor" not in table and " GPU " not in table.splitlines()[2]
    assert "on CPU, from float32 costs whatever --dtype says" in table.splitlines()[-1]
    gpu_table = plan_for(1, 80, 8).table()
    assert "fullest GPU" in gpu_table and "GB/actor" in gpu_table


def test_overrides_a_layout_has_no_use_for_are_named_in_warnings():
    """A new user's trial: --cpu-replicas with --cpu-layout per-metric and --num-gpus without GPUs were
    ignored without a word; per-metric --replicas showed in the fused table as if they applied."""
    fused = plan_for(0, 80, 4, metrics=["clipscore", "pickscore"], clipscore={"replicas": 3, "num_gpus": 0.5})
    assert any(w.startswith("--num-gpus for clipscore ignored") for w in fused.warnings)
    assert any(w.startswith("--replicas for clipscore ignored") for w in fused.warnings)
    assert {p.replicas for p in fused.phases[0].pools.values()} == {4}  # the fused actors, one per CPU
    config = cfg(["clipscore"])
    config.cpu_layout, config.cpu_replicas = "per-metric", 2
    per_metric = plan_run(config, ClusterShape.uniform(0, 80, 4), measured=False)
    assert any(w.startswith("--cpu-replicas ignored") for w in per_metric.warnings)
    config.cpu_layout = "fused"
    on_gpus = plan_run(config, ClusterShape.uniform(1, 80, 8), measured=False)
    assert any(w.startswith("--cpu-replicas ignored: GPUs are used") for w in on_gpus.warnings)
    assert not plan_for(0, 80, 4).warnings and not plan_for(1, 80, 8).warnings


def test_a_gpu_node_short_of_whole_decode_actors_is_warned_about(capsys):
    """New user's trial: 8 GPUs / 4 CPUs left 2.8 CPUs, enough on paper for the 2.2 the rate needs,
    but only 2 whole decode actors (50 img/s against the GPUs' 56): the plan said nothing."""
    from janus_ray.cli import main

    assert main(["plan", "--gpus", "8", "--gpu-memory-gb", "80", "--cpus", "4"]) == 0
    out = capsys.readouterr().out
    assert "decode: up to 2 actor(s)" in out
    assert "2 decode actor(s), ~50 img/s, cannot keep the GPUs fed (~56 img/s): decoding limits the run" in out


def test_more_fused_cpu_replicas_than_cores_is_warned_about():
    """New user's trial: `--cpu-replicas 100` on 2 CPUs planned 100 actors x 0.1 CPU, silently."""
    config = cfg()
    config.cpu_replicas = 100
    plan = plan_run(config, ClusterShape.uniform(0, 0, 2), measured=False)
    assert any(w.startswith("--cpu-replicas 100 > 2 CPU(s): more fused actors than cores") for w in plan.warnings)
    config.cpu_replicas = 2
    assert not plan_run(config, ClusterShape.uniform(0, 0, 2), measured=False).warnings


def test_the_json_plan_keeps_small_cpu_rates():
    """New user's trial: `plan --json` rounded per-metric CPU rates (0.0104 img/s) to 0.0."""
    config = cfg()
    config.cpu_layout = "per-metric"
    plan = plan_run(config, ClusterShape.uniform(0, 0, 2), measured=False)
    document = plan.to_json()
    for phase, shown in zip(plan.phases, document["phases"]):
        for metric, pool in phase.pools.items():
            assert 0 < pool.images_per_s < 0.05
            assert shown["metrics"][metric]["images_per_s"] == pytest.approx(pool.images_per_s, rel=1e-3)


def test_a_small_gpu_refusal_states_its_memory_without_rounding_it_to_zero():
    with pytest.raises(ConfigError) as err:
        plan_for(1, 0.5, 8, metrics=["hpsv2"])
    message = str(err.value)
    assert "the largest GPU it may use has 0.5 GB (0.45 GB usable at 90%)" in message
    assert " 0 GB" not in message


@pytest.mark.parametrize("seconds, text", [(0, "under 1 s"), (0.4, "under 1 s"), (45.4, "45 s"), (89, "89 s"), (90, "2 min"), (5340, "89 min"),
                                           (5400, "1 h 30 min"), (3 * 3600 + 5 * 60, "3 h 05 min"),
                                           (50 * 3600, "2 d 2 h"), (float("inf"), "unknown time")])
def test_format_duration_rounds_to_the_unit_a_reader_wants(seconds, text):
    from janus_ray.plan import format_duration

    assert format_duration(seconds) == text


def test_run_estimate_divides_the_images_by_the_plans_rate():
    from janus_ray.plan import run_estimate

    plan = plan_for(1, 80, 16)
    estimate = run_estimate(plan, [100, 250])
    assert (estimate.folders, estimate.images) == (2, 350)
    assert estimate.seconds == pytest.approx(350 / plan.images_per_s)
    assert estimate.to_json()["estimated_seconds"] == pytest.approx(350 / plan.images_per_s, rel=1e-3)
    assert estimate.line().startswith("run: 350 image(s) in 2 folder(s)")
