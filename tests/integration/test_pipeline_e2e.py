"""End to end on a real local Ray: every folder, every metric, files checked column by column."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from janus_ray import load_scorer
from janus_ray.config import RunConfig
from janus_ray.pipeline import evaluate
from janus_ray.results import BASE_COLUMNS

from .conftest import WEIGHTS_ROOT

ALL_METRICS = ["hpsv2", "vqascore", "clipscore", "itmscore", "pickscore", "imagereward", "hpsv2.1"]
EXPECTED_HEADER = ["prompt_idx", "prompt", "image_path", *BASE_COLUMNS, "HPSv2.1Score", "PickScore_scaled"]


def run(inputs: dict, **overrides) -> object:
    config = RunConfig(
        folders=[str(f) for f in inputs["folders"]],
        weights_root=str(WEIGHTS_ROOT),
        prompt_json=str(inputs["prompt_json"]),
        metrics=list(overrides.pop("metrics", ALL_METRICS)),
        **overrides,
    )
    return evaluate(config)


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


@pytest.fixture(scope="module")
def full_run(local_ray, tmp_path_factory):
    from .conftest import build_inputs

    inputs = build_inputs(tmp_path_factory.mktemp("e2e"))
    # The GPU layout (decode pool + one actor pool per metric) on CPU; the fused CPU layout is
    # covered by the fault tests and the demo test.
    return inputs, run(inputs, decode_batch_size=4, cpu_layout="per-metric")


def test_every_folder_gets_three_files_and_the_summary(full_run):
    inputs, result = full_run
    for folder in inputs["folders"]:
        for ext in ("csv", "json", "parquet"):
            assert (folder / f"janus_eval_scores.{ext}").is_file(), folder
    summary = pd.read_csv(inputs["root"] / "summary.csv")
    assert sorted(summary["folder"]) == sorted(f.name for f in inputs["folders"])
    assert (inputs["root"] / "summary.md").read_text().startswith("| folder |")


def test_csv_columns_rows_and_average_row(full_run):
    inputs, _ = full_run
    for folder in inputs["folders"]:
        rows = read_csv(folder / "janus_eval_scores.csv")
        assert rows[0] == EXPECTED_HEADER
        body, average = rows[1:-1], rows[-1]
        assert average[:3] == ["AVERAGE", "", ""]
        for j, column in enumerate(EXPECTED_HEADER[3:], start=3):
            values = [float(r[j]) for r in body if r[j] != ""]
            if column in ("ITMScore", "VQAScore", "CLIPScore"):
                assert values, f"{folder.name}: no {column} at all"
            expected = f"{np.mean(values):.6f}" if values else ""
            # The AVERAGE is the mean of the full-precision scores; the rows are rounded to 6 decimals.
            if values:
                assert abs(float(average[j]) - float(expected)) <= 2e-6, (folder.name, column)
            else:
                assert average[j] == ""
        idx = [int(r[0]) for r in body if r[0] != ""]
        assert idx == sorted(idx)


def test_scores_equal_the_scorers_called_directly(full_run):
    inputs, _ = full_run
    frames = pd.concat(
        [pd.read_parquet(f / "janus_eval_scores.parquet").assign(folder=str(f)) for f in inputs["folders"]]
    )
    ok = frames[frames["error"].isna()]
    assert len(ok) == 7 * 4 - 1  # 6 Janus folders + HF folder with 4 prompts each, minus the corrupt image
    paths = [str(Path(f) / p) for f, p in zip(ok["folder"], ok["image_path"])]
    prompts = list(ok["prompt"])
    columns = {"clipscore": "CLIPScore", "hpsv2.1": "HPSv2.1Score", "imagereward": "ImageReward",
               "itmscore": "ITMScore", "vqascore": "VQAScore"}
    for name, column in columns.items():
        direct = load_scorer(name, WEIGHTS_ROOT).score(paths, prompts)
        got = ok[column].to_numpy()
        tolerance = 1e-4 * np.abs(direct) if name == "vqascore" else 1e-5
        assert np.all(np.abs(got - np.array(direct)) <= tolerance), name
    variants = load_scorer("pickscore", WEIGHTS_ROOT).score_variants(paths, prompts)
    np.testing.assert_allclose(ok["PickScore"], variants["pickscore"], atol=1e-5)
    np.testing.assert_allclose(ok["PickScore_scaled"], variants["pickscore_scaled"], atol=1e-4)


def test_corrupt_image_and_missing_prompts_cost_one_row_each(full_run):
    inputs, result = full_run
    frames = {f.name: pd.read_parquet(f / "janus_eval_scores.parquet") for f in inputs["folders"]}
    corrupt_folder = inputs["corrupt"].parents[2].name
    row = frames[corrupt_folder].set_index("image_path").loc["generated_prompts_dola_static/prompt_0002/img_00.jpg"]
    assert "unreadable image" in row["error"]
    assert all(math.isnan(row[c]) for c in BASE_COLUMNS)
    orphan = frames[inputs["orphan"].parents[2].name].set_index("image_path").loc["outputs_dola/prompt_4/img_00.jpg"]
    assert "out of range" in orphan["error"] and pd.isna(orphan["prompt"])
    no_prompt = frames["hf_metadata_variant"].set_index("image_path").loc["no_prompt.png"]
    assert no_prompt["error"] == "empty prompt"  # its metadata line has "prompt": ""
    assert result.n_failed == 3
    # everything else scored every metric
    for name, frame in frames.items():
        good = frame[frame["error"].isna()]
        assert good[BASE_COLUMNS].notna().all().all(), name


def test_json_keeps_the_earlier_keys_and_adds_meta(full_run):
    inputs, _ = full_run
    document = json.loads((inputs["folders"][2] / "janus_eval_scores.json").read_text())
    assert set(document) == {"per_image", "averages", "meta"}
    first = document["per_image"][0]
    assert {"prompt_idx", "prompt", "image_path", *BASE_COLUMNS} <= set(first)
    meta = document["meta"]
    assert meta["counts"]["images"] == 4 and meta["counts"]["failed"]["clipscore"] == 0
    assert set(meta["versions"]) == {"ray", "torch", "transformers"}
    assert meta["metrics"]["vqascore"]["reference"] and meta["metrics"]["vqascore"]["dtype"] == "float32"
    assert all(len(h) == 64 for h in meta["metrics"]["hpsv2"]["weights_sha256"].values())
    frame = pd.read_parquet(inputs["folders"][2] / "janus_eval_scores.parquet")
    for column in BASE_COLUMNS:
        assert document["averages"][column] == pytest.approx(frame[column].mean(), abs=1e-12)


def test_rerun_resumes_from_the_cache_with_identical_results(full_run, local_ray):
    inputs, first = full_run
    before = {f: (f / "janus_eval_scores.parquet").read_bytes() for f in inputs["folders"]}
    second = run(inputs, decode_batch_size=4)  # the cache is keyed by content, not by layout
    assert second.n_cached == len(ALL_METRICS) * (first.n_rows - first.n_failed)
    for folder in inputs["folders"]:
        a = pd.read_parquet(pd.io.common.BytesIO(before[folder]))
        b = pd.read_parquet(folder / "janus_eval_scores.parquet")
        pd.testing.assert_frame_equal(a, b)


def test_demo_builds_inputs_scores_them_and_says_the_numbers_mean_nothing(local_ray, tmp_path, capsys):
    from janus_ray.demo import VARIANTS, run_demo

    assert run_demo(tmp_path / "demo") == 0
    err = capsys.readouterr().err
    assert "meaningless" in err and "summary.csv" in err
    summary = pd.read_csv(tmp_path / "demo" / "variants" / "summary.csv")
    assert sorted(summary["folder"]) == sorted(VARIANTS)
    assert summary[["VQAScore", "CLIPScore", "HPSv2.1Score"]].notna().all().all()
    assert (tmp_path / "demo" / "variants" / "report.html").is_file()
    record = json.loads((tmp_path / "demo" / "variants" / "run.json").read_text(encoding="utf-8"))  # what `report` compares
    assert sorted(Path(f["results"]).name for f in record["folders"]) == sorted(VARIANTS)


class _Identity:
    def __call__(self, batch):
        return batch


def test_ray_data_helpers_started_early_are_the_ones_a_dataset_then_uses(local_ray):
    """``stream.start_ray_data_helpers`` creates Ray Data's helper actors right after the embedded
    Ray starts: the datasets must find them (named get-or-create), not start a second set."""
    from janus_ray.stream import start_ray_data_helpers

    ray = local_ray
    assert start_ray_data_helpers() == ["get_or_create_stats_actor", "get_or_create_autoscaling_coordinator",
                                        "get_or_create_actor_location_tracker"]
    ds = ray.data.range(8).map_batches(_Identity, batch_size=4, compute=ray.data.ActorPoolStrategy(size=1))
    assert sorted(row["id"] for row in ds.take_all()) == list(range(8))
    names = [actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)]
    for name in ("datasets_stats_actor", "AutoscalingCoordinator", "ActorLocationTracker"):
        assert names.count(name) == 1, names
