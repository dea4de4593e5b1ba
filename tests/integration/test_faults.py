"""Faults on a real local Ray: a killed metric actor, and a killed driver followed by a rerun.

Both faults are triggered by the ``dummy`` scorer's options (janus_ray/metrics/dummy.py), at a
chosen prompt: no test hook lives in the production actors, and nothing races a timer.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import yaml

from janus_ray import load_scorer
from janus_ray.config import MetricSpec, RunConfig
from janus_ray.pipeline import evaluate

from .conftest import WEIGHTS_ROOT, build_inputs


def read_all(folders, root: Path | None = None) -> pd.DataFrame:
    frames = []
    for folder in folders:
        base = root / Path(folder).name if root else Path(folder)
        frames.append(pd.read_parquet(base / "janus_eval_scores.parquet").assign(folder=Path(folder).name))
    return pd.concat(frames, ignore_index=True).sort_values(["folder", "image_path"], ignore_index=True)


@pytest.mark.parametrize("cpu_layout", ["fused", "per-metric"])
def test_a_killed_actor_is_restarted_and_no_row_is_lost_or_doubled(local_ray, tmp_path, cpu_layout):
    inputs = build_inputs(tmp_path)
    marker = tmp_path / "killed.txt"
    # The dummy actor's process exits on the first batch holding this prompt, once (the marker).
    die = {"die_on_prompt": inputs["prompts"][2], "die_once_file": str(marker)}
    config = RunConfig(
        folders=[str(f) for f in inputs["folders"]],
        weights_root=str(WEIGHTS_ROOT),
        prompt_json=str(inputs["prompt_json"]),
        metrics=["dummy", "clipscore"],
        metric_specs={"dummy": MetricSpec(batch_size=2, options=die), "clipscore": MetricSpec(batch_size=2)},
        decode_batch_size=2,
        output_dir=str(tmp_path / "out"),
        cpu_layout=cpu_layout,
    )
    result = evaluate(config)
    assert marker.read_text().startswith("killed dummy actor")  # the fault really happened
    if cpu_layout == "per-metric":  # the pixels went through the store, and every key was freed
        summary = result.pixel_stores[0] if len(result.pixel_stores) == 1 else None
        assert summary is not None and summary["held_bytes_total"] > 0 and summary["held_keys"] == 0, summary
    table = read_all(inputs["folders"], tmp_path / "out")
    assert len(table) == result.n_rows == 7 * 4 + 1 + 1  # every pair exactly once (+ orphan + no-prompt)
    assert not table.duplicated(["folder", "image_path"]).any()
    good = table[table["error"].isna()]
    assert len(good) == result.n_rows - 3 and good["DummyScore"].notna().all() and good["CLIPScore"].notna().all()
    # the killed batch's rows were scored again: all 7 rows with that prompt but the corrupt image
    with_prompt = table[table["prompt"] == inputs["prompts"][2]]
    assert len(with_prompt) == 7 and with_prompt["DummyScore"].notna().sum() == 6
    assert with_prompt.loc[with_prompt["DummyScore"].isna(), "folder"].tolist() == [inputs["corrupt"].parents[2].name]
    paths = [str(Path(next(f for f in inputs["folders"] if f.name == name)) / rel)
             for name, rel in zip(good["folder"], good["image_path"])]
    dummy = load_scorer("dummy", WEIGHTS_ROOT, **die).score(paths, list(good["prompt"]))
    np.testing.assert_array_equal(good["DummyScore"].to_numpy(np.float32), np.float32(dummy))
    direct = load_scorer("clipscore", WEIGHTS_ROOT).score(paths, list(good["prompt"]))
    np.testing.assert_allclose(good["CLIPScore"], direct, atol=1e-5)


def _eval_command(inputs: dict, out: Path, cache: Path, config: Path) -> list[str]:
    return [
        sys.executable, "-m", "janus_ray", "eval", *map(str, inputs["folders"]), "--config", str(config),
        "--weights-root", str(WEIGHTS_ROOT), "--prompt-json", str(inputs["prompt_json"]),
        "--metrics", "clipscore", "imagereward", "dummy", "--batch-size", "clipscore=2", "--batch-size",
        "imagereward=2", "--batch-size", "dummy=2", "--decode-batch-size", "2", "--output-dir", str(out),
        "--cache-dir", str(cache),
    ]


@pytest.mark.ray  # each `janus-ray eval` subprocess starts its own local Ray
def test_a_killed_driver_completes_on_rerun_with_the_uninterrupted_results(tmp_path):
    inputs = build_inputs(tmp_path, n_prompts=6)
    env = {**os.environ, "RAY_ADDRESS": ""}
    # The dummy scorer holds every batch with the last prompt until `release` exists: the run to be
    # killed cannot finish first. The options are the same in every run (same resume settings).
    release = tmp_path / "release"
    config = tmp_path / "stall.yaml"
    stall = {"stall_on_prompt": inputs["prompts"][-1], "stall_until_file": str(release)}
    config.write_text(yaml.safe_dump({"metric_specs": {"dummy": {"options": stall}}}), encoding="utf-8")
    # 1. the reference: one uninterrupted run
    release.touch()
    reference = subprocess.run(_eval_command(inputs, tmp_path / "ref", tmp_path / "ref_cache", config),
                               env=env, capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]
    # 2. a run killed (SIGKILL, driver and its local Ray) once results are cached; it cannot finish
    release.unlink()
    out, cache = tmp_path / "out", tmp_path / "cache"
    process = subprocess.Popen(_eval_command(inputs, out, cache, config), env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300  # a hang guard only: the run stalls until released
    while not list(cache.glob("part-*.parquet")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    parts_before = len(list(cache.glob("part-*.parquet")))
    assert parts_before >= 1, "the run was killed before any result was cached"
    assert not (out / "summary.csv").exists(), "the run finished before it could be killed"
    # 3. the rerun resumes and completes
    release.touch()
    rerun = subprocess.run(_eval_command(inputs, out, cache, config), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    hits = int(rerun.stderr.split("resume cache hits: ")[1].split()[0])
    assert hits >= 1
    got, expected = read_all(inputs["folders"], out), read_all(inputs["folders"], tmp_path / "ref")
    pd.testing.assert_frame_equal(got.drop(columns=["CLIPScore", "ImageReward"]),
                                  expected.drop(columns=["CLIPScore", "ImageReward"]))
    # Scores equal up to float32 batch-composition noise (a resumed row may share a batch with others).
    for column in ("CLIPScore", "ImageReward"):
        np.testing.assert_allclose(got[column], expected[column], atol=1e-6, equal_nan=True)


def test_a_checkpoint_that_fails_in_the_actors_constructor_ends_the_run_with_its_own_one_line_error(local_ray, tmp_path):
    """A new user's trial: an ImageReward.pt with the wrong keys passed the driver's checks and
    ended the run in ~280 lines of Ray's ActorDiedError. The actors' own WeightsError is raised, and
    the actors do not die for it (no Ray restart, no traceback per try: the rows carry the error)."""
    from janus_ray.errors import WeightsError

    inputs = build_inputs(tmp_path)
    config = RunConfig(folders=[str(inputs["folders"][-1])], weights_root=str(WEIGHTS_ROOT),
                       prompt_json=str(inputs["prompt_json"]), metrics=["dummy"],
                       metric_specs={"dummy": MetricSpec(options={"fail_on_load": "model.pt does not match the dummy model"})})
    with pytest.raises(WeightsError) as raised:
        evaluate(config, io.StringIO())
    assert str(raised.value) == ("Cannot load scorer 'dummy': model.pt does not match the dummy model "
                                 "(raised while the actors loaded their models).")
    chain, exc = [], raised.value
    while exc is not None and len(chain) < 8:
        chain.append(type(exc).__name__)
        exc = exc.__cause__ or exc.__context__
    assert not any("ActorDied" in name or "RayActorError" in name for name in chain), chain
