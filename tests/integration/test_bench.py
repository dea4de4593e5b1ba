"""scripts/bench.py at a tiny size, and the real-size weights generator at a tiny scale.

No timing is asserted: only that every phase ran and the JSON holds positive numbers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from janus_ray import load_scorer
from benchmarks import real_size
from benchmarks.inputs import make_inputs, make_prompts
from janus_ray.demo import synthetic_image

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "scripts" / "bench.py"


def run_bench(tmp_path: Path, *args: str, expect: tuple[str, ...] = ("speed-up", "model work")) -> dict:
    out = tmp_path / "bench.json"
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    command = [sys.executable, str(BENCH), *args, "--out", str(out), "--work-dir", str(work)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert any(text in done.stdout for text in expect), done.stdout[-3000:]
    return json.loads(out.read_text(encoding="utf-8"))


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.ray
@pytest.mark.parametrize("layout", ["fused", "per-metric"])
def test_bench_tiny_writes_every_number(tmp_path, layout):
    eval_args = f"--cpu-layout {layout}" + (" --cpu-replicas 1" if layout == "fused" else "")
    report = run_bench(tmp_path, "--models", "tiny", "--folders", "2", "--prompts", "3",
                       "--metrics", "clipscore", "hpsv2", "--device", "cpu", "--eval-args", eval_args)
    for key in ("command", "machine", "versions", "settings", "phases", "ratios", "methods", "table", "load_average"):
        assert key in report
    assert report["command"].startswith("python scripts/bench.py --models tiny")
    assert report["machine"]["cpu_count"] >= 1 and "gpu_name" in report["machine"]
    assert report["versions"]["torch"] and report["versions"]["ray"]
    settings = report["settings"]
    assert settings["images"] == 6 and settings["folders"] == 2 and settings["device"] == "cpu"
    assert [m["scorer"] for m in settings["metrics"]] == ["clipscore", "hpsv2"]
    assert settings["pipeline_command"].startswith("janus-ray eval ")

    phases = report["phases"]
    assert set(phases) == {"pipeline", "baseline", "model_work"}
    for name, phase in phases.items():
        assert phase["images"] == 6, name
        assert positive(phase["wall_s"]), name
        assert positive(phase["peak_rss_mb"]), name
        assert set(phase["per_metric"]) == {"clipscore", "hpsv2"}, name
    pipeline = phases["pipeline"]
    assert positive(pipeline["images_per_s"])
    detail = pipeline["detail"]
    assert detail["layout"] == layout
    assert settings["pipeline_command"].endswith(eval_args)
    for key in ("evaluate_s", "until_stream_s", "all_models_loaded_s", "steady_s", "steady_images_per_s",
                "driver_first_result_s", "actor_processes_cpu_s"):
        assert positive(detail[key]), key
    assert detail["actor_processes"] == (1 if layout == "fused" else 3)  # decode + one actor per metric
    assert positive(detail["decode"]["busy_s"]) and detail["decode"]["rows"] == 6
    assert pipeline["peak_processes"] > 1  # the driver and Ray's processes were all sampled
    assert positive(pipeline["tree_cpu_s"])
    for metric, stats in pipeline["per_metric"].items():
        assert positive(stats["actor_busy_s"]) and positive(stats["images_per_s"]), metric
        assert positive(stats["busy_s"]) and positive(stats["cpu_s"]) and stats["rows"] == 6, metric
        assert positive(stats["load_s"]) and stats["actors"] >= 1, metric
        assert positive(stats["actor_peak_rss_mb"]) and positive(stats["mb_in"]), metric
        assert stats["cuda_peak_mb"] is None  # CPU run
        if layout == "per-metric":
            assert positive(stats["process_cpu_s"]), metric
    for metric, stats in phases["baseline"]["per_metric"].items():
        assert stats["images"] == 6 and positive(stats["load_s"]) and positive(stats["images_per_s"]), metric
    work = phases["model_work"]
    assert positive(work["total_s"]) and positive(work["images_per_s"])
    for metric, stats in work["per_metric"].items():
        assert stats["batch_size"] == 8 and positive(stats["forward_s"]), metric
    ratios = report["ratios"]
    assert positive(ratios["baseline_over_pipeline"]) and positive(ratios["efficiency"])
    # The pipeline wrote its result files.
    results = tmp_path / "work" / "runs" / "pipeline-0" / "out" / "results"
    assert len(list(results.glob("*/janus_eval_scores.csv"))) == 2


@pytest.mark.slow  # real-size / many-row work without Ray: seconds to tens of seconds
def test_bench_real_size_scaled_down_runs_without_ray(tmp_path):
    """The real-size path of the bench (generate, then score), shrunk; the pipeline phase skipped."""
    report = run_bench(tmp_path, "--models", "real-size", "--real-size-scale", "0.05", "--folders", "1",
                       "--prompts", "2", "--metrics", "clipscore", "--phases", "baseline", "model_work",
                       "--device", "cpu", "--batch-size", "2")
    assert report["settings"]["real_size"]["settings"]["scale"] == 0.05
    assert set(report["phases"]) == {"baseline", "model_work"}
    assert report["phases"]["model_work"]["per_metric"]["clipscore"]["batch_size"] == 2
    assert report["ratios"]["baseline_over_pipeline"] is None


def test_inputs_tree_has_the_janus_layouts(tmp_path):
    prompts = make_prompts(5, seed=1)
    assert len(set(prompts)) == 5 and prompts == make_prompts(5, seed=1)
    inputs = make_inputs(tmp_path / "in", 8, prompts)  # more than the six layouts: names stay unique
    names = [f.name for f in inputs["folders"]]
    assert len(names) == 8 and len(set(names)) == 8
    assert inputs["n_images"] == 40
    from janus_ray.manifest import build_manifest, load_prompts

    scans = build_manifest([str(f) for f in inputs["folders"]], load_prompts(inputs["prompt_json"]))
    assert [len(s.rows) for s in scans] == [5] * 8
    assert all(row.prompt == prompts[row.prompt_idx] for s in scans for row in s.rows)
    from PIL import Image

    assert Image.open(scans[0].rows[0].image_path).size == (384, 384)  # Janus's size by default
    small = make_inputs(tmp_path / "small", 1, prompts[:1], image_size=32)
    assert [Image.open(p).size for p in small["folders"][0].rglob("*.jpg")] == [(32, 32)]


# ----- the real-size generator ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def scaled_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real_size") / "weights"
    real_size.generate(root, scale=0.05, log=lambda text: None)
    return root


@pytest.mark.parametrize("metric", ["clipscore", "pickscore", "hpsv2", "hpsv2.1", "itmscore", "imagereward", "vqascore"])
def test_scaled_real_size_root_loads_through_load_scorer(scaled_root, metric):
    scorer = load_scorer(metric, scaled_root)
    images = [synthetic_image(seed=i) for i in range(2)]
    scores = scorer.score(images, ["a red circle on a white background", "two cats sleeping on a sofa"])
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)


def test_scaled_root_keeps_real_vocabularies_and_formats(scaled_root):
    from janus_ray.metrics.vqa_score import SentencePieceT5Tokenizer

    xxl = scaled_root / "clip-flant5-xxl"
    assert (xxl / "model.safetensors.index.json").is_file()
    assert len(SentencePieceT5Tokenizer(xxl)) == 32100  # FlanT5's len(tokenizer): embeddings keep 32100 rows
    assert json.loads((xxl / "config.json").read_text())["vocab_size"] == 32128
    assert json.loads((scaled_root / "ImageReward" / "med_config.json").read_text())["vocab_size"] == 30524
    assert (scaled_root / "HPSv2" / "open_clip_config.json").is_file()  # scaled: the config says so
    marker = json.loads((scaled_root / real_size.MARKER).read_text())
    assert marker["settings"]["scale"] == 0.05
    # A second call with the same settings reuses the root.
    again = real_size.generate(scaled_root, scale=0.05, log=lambda text: None)
    assert again["settings"] == marker["settings"]


def test_real_size_dimensions_at_scale_one():
    """At scale 1 the architectures have the real checkpoints' parameter counts (meta device, no memory)."""
    description = real_size.generate("/nonexistent/dry-run", scale=1.0, dry_run=True, log=lambda text: None)
    params = {name.split(" ")[0]: part["params"] for name, part in description["parts"].items()}
    assert params["clip-vit-large-patch14-336"] == pytest.approx(427.9e6, rel=1e-3)  # CLIP ViT-L/14-336
    assert params["PickScore_v1"] == pytest.approx(986.1e6, rel=1e-3)  # CLIP ViT-H/14
    assert params["HPSv2/HPS_v2_compressed.pt"] == pytest.approx(986.1e6, rel=1e-3)  # open_clip ViT-H-14
    assert params["blip2-itm-vit-g"] == pytest.approx(1.172e9, rel=1e-2)  # EVA ViT-g + Q-Former
    assert params["ImageReward/ImageReward.pt"] == pytest.approx(446.7e6, rel=1e-2)  # BLIP ViT-L + BERT-base
    assert params["clip-flant5-xxl/"] == pytest.approx(11.16e9, rel=1e-2)  # FlanT5-XXL + projector
    assert description["total_bytes"] > 38e9


# ----- the other modes ---------------------------------------------------------------------------
@pytest.mark.slow  # real-size / many-row work without Ray: seconds to tens of seconds
def test_driver_mode_runs_the_driver_code_at_two_sizes(tmp_path):
    report = run_bench(tmp_path, "--mode", "driver", "--rows", "3000", expect=("per batch ms",))
    assert set(report["results"]) == {"3000", "10000"}
    for rows, result in report["results"].items():
        assert result["rows"] == int(rows) and positive(result["driver_s"]) and positive(result["peak_rss_mb"])
        assert positive(result["per_batch_ms_median"]) and result["cached_rows_per_metric"] == int(rows) // 2
        assert set(result["steps_s"]) == {"manifest_frame", "cache_load", "select_todo_and_rows", "result_batches",
                                          "assemble", "write_outputs"}


@pytest.mark.slow  # real-size / many-row work without Ray: seconds to tens of seconds
def test_transport_mode_reports_bytes_per_image_for_six_metrics(tmp_path):
    report = run_bench(tmp_path, "--mode", "transport", "--folders", "1", "--prompts", "3", "--no-ray",
                       expect=("bytes per image through it",))
    before, after = report["in_process"]["before"], report["in_process"]["with_store"]
    assert before["metrics"] == after["metrics"] == ["hpsv2", "vqascore", "clipscore", "itmscore", "pickscore",
                                                      "imagereward"]
    assert before["images"] == after["images"] == 3
    decode = before["bytes_per_image_by_stage_output"]["decode"]
    # uint8 at model resolution: more than one 224 px image, less than the float32 tensors were
    assert 3 * 224 * 224 < decode < 4 * 3 * 224 * 224 * 6
    assert positive(before["bytes_per_image_between_stages"])
    # with the store: the same pixels put once (plus offsets), blocks without pixels, all freed
    put = after["bytes_per_image_put_in_store"]
    assert 0.99 * decode < put <= decode  # the decode block held the pixels plus small numeric columns
    assert all(value < 0.01 * decode for value in after["bytes_per_image_by_stage_output"].values())
    assert after["bytes_per_image_through_object_store"] < before["bytes_per_image_through_object_store"]
    assert after["store_keys_left"] == 0 and report["ray"] == {}


@pytest.mark.ray
def test_overhead_mode_times_pipeline_loop_and_cached_rerun(tmp_path):
    report = run_bench(tmp_path, "--mode", "overhead", "--folders", "2", "--prompts", "3", "--image-size", "32",
                       expect=("pipeline throughput / loop throughput", "CPU seconds (whole process tree)"))
    for line in ("2 no-op actors over the same 1 blocks, the shutdown", "CPU seconds (whole process",
                 "the pipeline's time over the loop's: ", "pipeline throughput / loop throughput"):
        assert line in report["table"], report["table"]
    phases = report["phases"]
    overhead = report["overhead"]  # the table's derived figures, in bench.json too
    assert overhead["ray_floor_s"] == phases["ray_floor"]["ray_s"] and overhead["extra_s"] is not None
    assert set(phases) == {"pipeline", "loop", "cached_rerun", "ray_floor"}
    floor = phases["ray_floor"]["detail"]
    assert phases["ray_floor"]["images"] == 6 and floor["replicas"] == 2 and floor["blocks"] == 1
    assert 0 < floor["start_s"] < floor["first_result_s"] < floor["ray_s"] <= phases["ray_floor"]["wall_s"]
    # where the CPU went, per kind of process: the fused actors are among the pipeline's
    assert any(kind.startswith("ray::MapWorker") for kind in phases["pipeline"]["cpu_s_by_process"])
    assert "root" in phases["loop"]["cpu_s_by_process"]
    assert [m["scorer"] for m in report["settings"]["metrics"]] == ["pickscore"]
    assert phases["pipeline"]["images"] == 6 and phases["loop"]["images"] == 6
    assert phases["cached_rerun"]["detail"]["cache_hits"] == 6 and phases["cached_rerun"]["detail"]["to_score"] == 0
    assert report["image_size"] == 32


def test_process_kind_names_ray_daemons_workers_and_programs():
    from benchmarks.procmem import process_kind

    assert process_kind("ray::MapWorker(MapBatches(FusedStage)) ") == "ray::MapWorker(MapBatches(FusedStage))"
    assert process_kind("/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --foo") == "raylet"
    assert process_kind("/venv/bin/python -m benchmarks.phases") == "python"
    assert process_kind("") == "?"


def test_overhead_table_pairs_the_alternating_runs_and_gives_the_median_of_their_ratios():
    from benchmarks.modes import format_overhead, overhead_figures

    report = {"settings": {"folders": 2, "prompts": 3, "images": 6, "metrics": [{"name": "pickscore", "batch_size": 64}]},
              "image_size": 32, "machine": {"cpus_usable": 2}, "load_average": {"before": [0.1], "after": [0.2]},
              "phases": {"pipeline": {"wall_s": 40.0, "images_per_s": 0.15, "wall_s_runs": [50.0, 40.0, 38.0], "detail": {}},
                         "loop": {"wall_s": 32.0, "images_per_s": 0.19, "wall_s_runs": [32.0, 34.0, 28.0],
                                  "detail": {"processes": 2}}}}
    text = format_overhead(report)
    assert "pipeline throughput / loop throughput: 0.80x (median loop run / median pipeline run)" in text
    assert ("per run (loop s / pipeline s): 32.0 / 50.0 = 0.64x, 34.0 / 40.0 = 0.85x, 28.0 / 38.0 = 0.74x; "
            "median of these ratios 0.74x") in text
    assert "Ray's floor" not in text
    # Ray's own cost for the run's shape (median of its runs), beside what the pipeline adds to the
    # loop (per pair, median) and what 0.8x allows, with the conclusion
    report["phases"]["ray_floor"] = {"wall_s": 9.9, "wall_s_runs": [9.9, 9.0, 11.0], "ray_s": 8.3,
                                     "ray_s_runs": [8.3, 7.9, 9.6], "detail": {
        "replicas": 2, "blocks": 64, "ray_s": 8.3, "start_s": 4.6, "first_result_s": 7.1, "stream_s": 3.2,
        "shutdown_s": 0.5}}
    text = format_overhead(report)
    assert ("Ray's floor (from `import ray` to the end of the shutdown: the embedded Ray's start, 2 no-op actors "
            "over the same 64 blocks, the shutdown; no torch, model or image): 8.3 s (median of 8.3, 7.9, 9.6); its "
            "median run: Ray up at 4.6 s, first result at 7.1 s, last at 7.8 s, shut down in 0.5 s") in text
    assert ("the pipeline's time over the loop's: 10.0 s; 0.8x allows 8.0 s (medians over the pairs); Ray alone "
            "takes more than 0.8x allows at this size (8.3 s)") in text
    figures = overhead_figures(report["phases"])  # what bench.json holds as "overhead"
    assert figures["median_pair_ratio"] == pytest.approx(0.74, abs=0.005) and figures["ray_floor_s"] == 8.3
    assert (figures["extra_s"], figures["allowed_s"], figures["ratio_of_medians"]) == (10.0, 8.0, 0.8)
    for phase in report["phases"].values():
        phase["wall_s_runs"] = phase["wall_s_runs"][:1]
    report["phases"]["ray_floor"].update(ray_s=7.0, ray_s_runs=[7.0])
    text = format_overhead(report)
    assert "per run" not in text and "median loop run" not in text and "median of" not in text
    assert ("the pipeline's time over the loop's: 18.0 s; 0.8x allows 8.0 s; Ray alone fits in what 0.8x allows "
            "(7.0 s)") in text


def test_overhead_fixed_costs_come_from_the_median_run_itself():
    """A new user's trial: with --repeats 2 "process start + exit" read 2.8 s where both runs took 0.08 s
    (the median of the two walls minus the lower run's own clock)."""
    from benchmarks.modes import format_overhead
    from benchmarks.runner import summarise

    runs = {"pipeline": [{"wall_s": w, "images": 6, "memory": {"peak_rss_mb": 1, "peak_pss_mb": 1, "peak_processes": 1},
                          "per_metric": {}, "child_s": w - 0.08, "import_s": 0.3} for w in (19.15, 24.62)]}
    phases = summarise(runs, 6)
    report = {"settings": {"folders": 1, "prompts": 6, "images": 6, "metrics": [{"name": "pickscore", "batch_size": 64}]},
              "image_size": 32, "machine": {"cpus_usable": 2}, "load_average": {"before": [0.1], "after": [0.2]},
              "phases": phases}
    assert phases["pipeline"]["wall_s"] == pytest.approx(21.885)  # the median of two: their mean
    assert "process start + exit 0.1" in format_overhead(report)


def test_a_process_that_has_exited_but_not_been_reaped_is_named_by_its_program_not_a_question_mark():
    """A new user's trial: '? 0.4' in the loop's CPU list. A zombie has no command line left."""
    import subprocess
    import time

    from benchmarks.procmem import TreeSampler, import_psutil

    if import_psutil() is None:
        pytest.skip("psutil not installed")
    child = subprocess.Popen(["sleep", "0"])
    deadline = time.monotonic() + 10
    while import_psutil().Process(child.pid).status() != "zombie" and time.monotonic() < deadline:
        time.sleep(0.02)
    sampler = TreeSampler(os.getpid(), interval=0.05).start()
    time.sleep(0.3)
    sampler.stop()
    child.wait()
    assert sampler.names[child.pid] == "sleep" and "?" not in sampler.cpu_by_kind()
