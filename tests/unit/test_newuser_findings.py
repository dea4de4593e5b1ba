"""Regression tests for what a first-time user hit (odd inputs, odd flags), one test per finding. No Ray."""

from __future__ import annotations

import signal

import pandas as pd
import pytest

import janus_ray.pipeline
from janus_ray.cli import main
from janus_ray.config import MetricSpec, RunConfig
from janus_ray.demo import PROMPTS, make_variant_folders
from janus_ray.errors import ConfigError, unknown_name_message
from janus_ray.plan import ClusterShape, plan_run
from janus_ray.report.build import compare
from janus_ray.report.data import Folder, Metric

from ..conftest import WEIGHTS_ROOT

METRIC = Metric("S", "s", True)


def _folder(name: str, rows: list[tuple[str, float]]) -> Folder:
    table = pd.DataFrame([(p, 0, v) for p, v in rows], columns=["prompt", "sample", "S"])
    table["prompt_idx"] = -1
    table["prompt_key"] = "text:" + table["prompt"]
    return Folder(name, table, {})


def test_a_folder_sharing_no_prompt_with_the_baseline_is_no_test_and_stays_out_of_holm():
    """`janus-ray report` on two sidecar folders and a prompt-dir folder with other prompts: the folder
    with 0 pairs got p = 1.0, "not significant", and counted in Holm's family (inflating every other p)."""
    base = _folder("base", [(f"p{i}", 0.0) for i in range(6)])
    better = _folder("better", [(f"p{i}", 1.0 + 0.1 * i) for i in range(6)])  # better on all 6: exact p = 2/64
    elsewhere = _folder("elsewhere", [(f"q{i}", 5.0) for i in range(6)])  # no prompt in common
    table = compare([base, better, elsewhere], [METRIC], "base", n_resamples=10).set_index("folder")
    assert table.loc["elsewhere", "n_pairs"] == 0
    assert pd.isna(table.loc["elsewhere", "p_value"]) and pd.isna(table.loc["elsewhere", "holm_p"])
    assert table.loc["elsewhere", "verdict"] == "no paired data"
    assert table.loc["better", "holm_p"] == pytest.approx(2 / 64)  # a family of one test, not two
    assert table.loc["better", "verdict"] == "significantly better"


def test_a_zero_gpu_share_on_gpus_is_refused_by_name_not_a_zero_division():
    """`janus-ray plan --gpus 1 --gpu-memory-gb 80 --cpus 8 --num-gpus vqascore=0` crashed with ZeroDivisionError."""
    config = RunConfig(folders=["x"], metric_specs={"vqascore": MetricSpec(num_gpus=0.0)})
    config.resolve_names()
    with pytest.raises(ConfigError, match=r"--num-gpus vqascore=0: .* --device cpu"):
        plan_run(config, ClusterShape.uniform(1, 80, 8), measured=False)
    assert plan_run(config, ClusterShape.uniform(0, 0, 2), measured=False).gpus_used == 0  # no GPUs: ignored


@pytest.mark.parametrize(("typed", "meant"), [("HPSv2", "hpsv2"), ("VQAScore", "vqascore"), ("ImageReward", "imagereward")])
def test_an_unknown_metric_in_another_case_points_at_the_metric(typed, meant):
    """`--metrics HPSv2` (the CSV column's spelling) said "Unknown scorer 'HPSv2'." with no hint."""
    names = ["clipscore", "hpsv2", "hpsv2.1", "imagereward", "itmscore", "pickscore", "vqascore"]
    assert f"Did you mean '{meant}'" in unknown_name_message("scorer", typed, names)


def test_ctrl_c_during_eval_is_one_line_naming_the_resume_cache_and_exit_130(tmp_path, monkeypatch, capsys):
    """SIGINT during `janus-ray eval` printed Ray's KeyboardInterrupt traceback (exit 1)."""
    folders = make_variant_folders(tmp_path / "variants", PROMPTS[:2])

    def interrupted(config, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(janus_ray.pipeline, "evaluate", interrupted)
    out = tmp_path / "out"
    argv = ["eval", str(folders[0]), "--weights-root", str(WEIGHTS_ROOT), "--metrics", "dummy", "--output-dir", str(out)]
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert main(argv) == 130
        # a second Ctrl-C (a new user's trial: three within a second) must not break Ray's shutdown at exit
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err
    assert "interrupted" in err and str(out.resolve() / ".janus_ray_cache") in err and "Traceback" not in err


def test_validate_names_an_image_in_a_sub_folder_of_a_prompt_folder_as_ignored_not_as_promptless(tmp_path):
    """`validate` listed prompt_8/nested/img_00.png under "images without a prompt" although prompt 8
    exists; eval's own warning says it is ignored for not being directly inside a prompt folder."""
    from PIL import Image

    from janus_ray.manifest import build_manifest, validate_report

    for rel in ("run/prompt_0/img_00.png", "run/prompt_1/nested/img_00.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / rel)
    text, ok = validate_report(build_manifest([tmp_path], ["a cat", "a dog"]))
    assert not ok
    assert "images without a prompt: 0" in text
    assert "images ignored: not directly inside a prompt folder: 1 (run/prompt_1/nested/img_00.png)" in text


def test_a_prompt_list_that_does_not_match_the_slug_folders_is_flagged(tmp_path):
    """`validate gsb_d --prompt-json wrong.json` (folders 0_a_red_cat, 1_two_cats; list 'a bird ...',
    'a green apple') said "status: ok": every image would be scored against another prompt, silently."""
    from PIL import Image

    from janus_ray.manifest import build_manifest, validate_report

    for rel in ("generated_samples_batch/0_a_red_cat/00.png", "generated_samples_batch/1_Two-Cats,_sitting/00.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / rel)
    right = build_manifest([tmp_path], ["a red cat on a mat", "two cats, sitting on a sofa"])[0]
    assert right.slug_mismatches == [] and not any("do not match" in w for w in right.warnings)
    wrong = build_manifest([tmp_path], ["a bird flying over the sea", "a red cat on a mat"])[0]
    assert wrong.slug_mismatches == ["0_a_red_cat vs 'a bird flying over the sea'",
                                     "1_Two-Cats,_sitting vs 'a red cat on a mat'"]
    assert any("2 <idx>_<slug> sub-folder name(s) do not match prompt <idx>" in w for w in wrong.warnings)
    text, _ = validate_report([wrong])
    assert "sub-folder names unlike their prompt (wrong --prompt-json?): 2 (0_a_red_cat vs" in text


@pytest.mark.parametrize("extra", [["--cpus", "8"], ["--nodes", "3"]])
def test_plan_refuses_cpus_or_nodes_without_gpus_instead_of_ignoring_them(extra, capsys):
    """`janus-ray plan --cpus 8` printed the plan of this 2-CPU machine, the flag silently ignored."""
    assert main(["plan", *extra]) == 2
    assert "--cpus and --nodes describe a cluster together with --gpus" in capsys.readouterr().err
    assert main(["plan", "--gpus", "0", *extra] + ([] if "--cpus" in extra else ["--cpus", "4"])) == 0


def test_validate_lists_which_prompts_have_no_image(tmp_path):
    """`validate` said "prompts without an image: 2" where eval's warning names them (indices 8, 9)."""
    from PIL import Image

    from janus_ray.manifest import build_manifest, validate_report

    for i in (0, 2):
        (tmp_path / "run" / f"prompt_{i}").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "run" / f"prompt_{i}" / "img_00.png")
    text, ok = validate_report(build_manifest([tmp_path], ["a", "b", "c", "d"]))
    assert not ok and "prompts without an image: 2 (indices 1, 3)" in text


@pytest.mark.slow  # a fresh interpreter importing torch
def test_importing_janus_ray_turns_off_transformers_progress_bars():
    """Every eval printed ~20 "Loading weights: 100%|####| 94/94" bars forwarded from the actors."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}  # as a fresh shell has it
    code = "import janus_ray; from transformers.utils import logging; print(logging.is_progress_bar_enabled())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "False"


def test_a_missing_weight_file_points_at_check_weights_for_the_other_metrics(tmp_path):
    """`eval --weights-root EMPTY_DIR` named only hpsv2's file (the first metric checked): a user fixes it,
    reruns, meets the next metric's, and so on. The message now says how to see them all at once."""
    from janus_ray.errors import WeightsError
    from janus_ray.metrics import get_scorer_class
    from janus_ray.metrics.weights import check_required

    with pytest.raises(WeightsError, match=r"janus-ray check-weights --weights-root DIR"):
        check_required(get_scorer_class("hpsv2").required_files(tmp_path), "hpsv2")


def test_a_refused_gpu_share_says_why_with_the_sums():
    """`plan --gpus 1 --gpu-memory-gb 40 --cpus 8 --num-gpus vqascore=0.5` said only "clipscore needs 3.4 GB
    per actor and 1 such GPU(s)": not the metric the user set, no sums, no word that phases are off."""
    config = RunConfig(folders=["x"], metric_specs={"vqascore": MetricSpec(num_gpus=0.5)})
    config.resolve_names()
    with pytest.raises(ConfigError) as info:
        plan_run(config, ClusterShape.uniform(1, 40, 8), measured=False)
    message = str(info.value)
    assert "every metric must be resident at once (no phases)" in message
    assert "vqascore 1 x 0.5 GPU (" in message and "beside hpsv2 (" in message and "36 GB usable" in message
    assert len(plan_run(RunConfig(folders=["x"]), ClusterShape.uniform(1, 40, 8), measured=False).phases) > 1


def test_progress_counts_failed_rows_in_pyarrow_backed_score_columns():
    """On Ray the score columns arrive as double[pyarrow]; NaN there is not NA, so `.isna()` said 0."""
    import pyarrow as pa

    from janus_ray.columns import output_column, time_column
    from janus_ray.pipeline import MetricPlan, Progress

    plan = MetricPlan(metric="pickscore", options={}, columns={"pickscore": "PickScore"}, device="cpu", dtype=None,
                      batch_size=8, num_gpus=0.0, num_cpus=1.0, replicas=1, resources={})
    batch = pd.DataFrame({"row_id": [0, 1, 2],
                          output_column("pickscore"): pd.arrays.ArrowExtensionArray(pa.array([0.5, float("nan"), float("nan")])),
                          time_column("pickscore"): [0.1, 0.1, 0.1]})
    progress = Progress([plan], {"pickscore": 3}, stream=__import__("io").StringIO())
    todo = {"pickscore": __import__("numpy").array([True, True, False])}
    progress.update(batch, todo)
    assert progress.done["pickscore"] == 2
    assert progress.failed["pickscore"] == 1  # row 2 failed too, but it was not this metric's to do


def test_a_cpu_metric_plan_names_float32_not_the_reference_default():
    from janus_ray.pipeline import MetricPlan

    plan = MetricPlan(metric="hpsv2", options={}, columns={}, device="cpu", dtype=None, batch_size=8,
                      num_gpus=0.0, num_cpus=1.0, replicas=1, resources={})
    assert "dtype float32" in plan.describe()
    plan.device = "cuda"
    assert "dtype reference default" in plan.describe()


def test_the_fused_cpu_plan_says_decoding_runs_inside_the_fused_actors(tmp_path):
    config = RunConfig(folders=[str(tmp_path)], weights_root=str(WEIGHTS_ROOT), metrics=["pickscore", "clipscore"])
    config.validate()
    text = plan_run(config, ClusterShape.uniform(0, 0.0, 4), use_weight_files=False, measured=False).table()
    assert "fused: 4 actor(s) x 0.75 CPU, each decoding an image once and running every metric" in text
    assert "decode: up to 0 actor(s)" not in text
    # a new user's trial: every metric's row said "replicas 4, CPU 0.75", as if 8 actors ran
    assert "replicas" not in text


def test_a_rerun_with_fewer_metrics_warns_that_the_files_lose_the_earlier_scores(tmp_path):
    """Rerunning into the same output folder with fewer --metrics rewrote the files without those
    metrics' columns, silently; the scores are still in the resume cache."""
    import io

    import numpy as np

    from janus_ray.outputs import dropped_score_columns, warn_dropped_scores
    from janus_ray.results import RESULT_STEM, parquet_bytes

    folder = tmp_path / "varA"
    folder.mkdir()
    earlier = pd.DataFrame({"folder": [str(folder)] * 2, "image_path": ["a.png", "b.png"], "prompt": ["p", "q"],
                            "prompt_idx": [0, 1], "sample": [0, 0], "error": ["", ""],
                            "VQAScore": [0.7, np.nan], "PickScore": [np.nan, np.nan]})
    (folder / f"{RESULT_STEM}.parquet").write_bytes(parquet_bytes(earlier, ["VQAScore", "PickScore"]))
    assert dropped_score_columns(folder / f"{RESULT_STEM}.parquet", ["VQAScore", "PickScore"]) == ["VQAScore"]
    assert dropped_score_columns(tmp_path / "absent.parquet", ["VQAScore"]) == []

    class Scan:
        pass

    scan = Scan()
    scan.folder = str(folder)
    now = earlier.assign(VQAScore=np.nan, PickScore=[0.1, 0.2])
    out = io.StringIO()
    warn_dropped_scores(now, ["VQAScore", "PickScore"], [scan], {str(folder): folder}, out)
    assert "varA held VQAScore scores" in out.getvalue() and "resume cache" in out.getvalue()
    quiet = io.StringIO()
    warn_dropped_scores(earlier.assign(PickScore=[0.1, 0.2]), ["VQAScore", "PickScore"], [scan], {str(folder): folder}, quiet)
    assert quiet.getvalue() == ""
