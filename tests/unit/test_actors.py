"""The Ray Data UDFs called directly, without Ray: MetricActor's per-row retry and FusedStage."""

from __future__ import annotations

import numpy as np
from PIL import Image

from janus_ray.actors.decode_stage import DecodeStage, pixel_column, stage_error_column, todo_column
from janus_ray.actors.fused_stage import FusedStage
from janus_ray.actors.metric_actor import MetricActor, output_column, time_column
from janus_ray.metrics import load_scorer


def write_images(folder, n: int) -> list[str]:
    paths = []
    for i in range(n):
        path = folder / f"img_{i}.png"
        Image.new("RGB", (20 + i, 24), (40 * i, 100, 200)).save(path)
        paths.append(str(path))
    return paths


def row_columns(paths: list[str], prompts: list[str]) -> dict[str, np.ndarray]:
    n = len(paths)
    return {
        "image_path": np.array(paths, dtype=object),
        "prompt": np.array(prompts, dtype=object),
        "has_prompt": np.array([bool(p) for p in prompts]),
        "decode_error": np.array([""] * n, dtype=object),
        todo_column("dummy"): np.ones(n, dtype=bool),
    }


def decoded(tmp_path, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch as the decode stage hands it on: uint8 pixel bytes + shape/source columns."""
    spec = {"scorer": "dummy", "weights_root": str(tmp_path), "options": {}}
    return DecodeStage({"dummy": spec}, None)(columns)


def actor(tmp_path, **options) -> MetricActor:
    return MetricActor("dummy", "dummy", str(tmp_path), "cpu", None, options)


def test_a_failing_batch_is_retried_row_by_row_and_only_the_culprit_fails(tmp_path):
    paths = write_images(tmp_path, 4)
    prompts = ["one", "the bad one", "three", "four"]
    udf = actor(tmp_path, fail_on_prompt="bad")
    batch = decoded(tmp_path, row_columns(paths, prompts))
    out = udf(batch)
    errors = list(out[stage_error_column("dummy")])
    assert errors[1].startswith("scoring failed: RuntimeError: dummy: fail_on_prompt 'bad' matched prompt")
    assert [e for i, e in enumerate(errors) if i != 1] == ["", "", ""]
    scores = out[output_column("dummy")]
    assert np.isnan(scores[1])
    expected = load_scorer("dummy", tmp_path).score([paths[i] for i in (0, 2, 3)], [prompts[i] for i in (0, 2, 3)])
    np.testing.assert_array_equal(scores[[0, 2, 3]], np.array(expected))
    # the pixels stop travelling after their stage (cells emptied, one schema kept)
    assert all(cell == b"" for cell in out[pixel_column("dummy")]) and (out[time_column("dummy")] >= 0).all()


def test_rows_not_to_score_are_left_empty(tmp_path):
    paths = write_images(tmp_path, 4)
    udf = actor(tmp_path)
    batch = decoded(tmp_path, row_columns(paths, ["a", "", "c", "d"]))
    batch[stage_error_column("dummy")] = np.array(["", "", "preprocessing failed: X", ""], dtype=object)
    batch["decode_error"][3] = "unreadable image: Y"
    out = udf(batch)
    scores = out[output_column("dummy")]
    assert not np.isnan(scores[0]) and np.isnan(scores[1:]).all()
    assert out[stage_error_column("dummy")][2] == "preprocessing failed: X"  # kept, not overwritten


def test_fused_stage_decodes_and_scores_in_one_call_like_direct_scoring(tmp_path):
    paths = write_images(tmp_path, 3)
    prompts = ["x", "y", "z"]
    spec = {"scorer": "dummy", "weights_root": str(tmp_path), "options": {"image_size": 8}}
    fused = FusedStage(
        decode={"metrics": {"dummy": spec}, "max_pixels": None},
        metrics=[{"metric": "dummy", "device": "cpu", "dtype": None, **spec}],
        torch_threads=1,
    )
    batch = row_columns(paths, prompts)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    batch = {key: np.append(value, {"image_path": str(tmp_path / "broken.png"), "prompt": "w", "has_prompt": True,
                                    "decode_error": "", todo_column("dummy"): True}[key]).astype(value.dtype)
             for key, value in batch.items()}  # fmt: skip
    out = fused(batch)
    assert out["decode_error"][3].startswith("unreadable image")
    scores = out[output_column("dummy")]
    expected = load_scorer("dummy", tmp_path, image_size=8).score(paths, prompts)
    np.testing.assert_array_equal(scores[:3], np.array(expected))
    assert np.isnan(scores[3])


def test_fused_stage_returns_only_the_result_columns_it_is_told_to_keep(tmp_path):
    from janus_ray.columns import result_columns
    from janus_ray.metrics import get_scorer_class

    class Plan:  # the two fields result_columns reads
        metric, columns = "dummy", get_scorer_class("dummy").output_columns(image_size=8)

    paths = write_images(tmp_path, 2)
    spec = {"scorer": "dummy", "weights_root": str(tmp_path), "options": {"image_size": 8}}
    keep = result_columns([Plan()])
    fused = FusedStage(decode={"metrics": {"dummy": spec}, "max_pixels": None},
                       metrics=[{"metric": "dummy", "device": "cpu", "dtype": None, **spec}], keep=keep)
    batch = {"row_id": np.array([5, 9]), **row_columns(paths, ["x", "y"])}
    out = fused(batch)
    assert list(out) == keep  # no paths, prompts or (emptied) pixel cells travel on
    np.testing.assert_array_equal(out["row_id"], [5, 9])
    np.testing.assert_array_equal(out[output_column("dummy")],
                                  load_scorer("dummy", tmp_path, image_size=8).score(paths, ["x", "y"]))


def test_quick_exit_is_not_installed_outside_a_ray_actor(tmp_path, monkeypatch):
    """The UDFs built in a plain process (a test, the in-process stream) never end it early: no
    atexit hook, and the actor's hook does nothing before ``actor_ended``."""
    from janus_ray import quick_exit

    registered = []
    monkeypatch.setattr(quick_exit.atexit, "register", lambda fn, *a, **k: registered.append(fn))
    monkeypatch.setattr(quick_exit, "_state", {"installed": False, "ended": False})
    stage = actor(tmp_path)
    assert stage._quick_exit is False and not quick_exit.in_ray_actor() and registered == []
    del stage
    assert quick_exit._state["ended"] is False  # __del__ marks nothing when nothing was installed
    ends = []
    monkeypatch.setattr(quick_exit, "end_now", ends.append)
    quick_exit._actor_exit()
    assert ends == []
    quick_exit.actor_ended()
    quick_exit._actor_exit()
    assert ends == [0]


def test_an_actor_whose_model_does_not_load_sends_why_on_every_row_and_the_driver_rebuilds_the_error(tmp_path):
    """A checkpoint that does not match its model: raising in the actor's constructor made Ray
    restart it and print ~300 lines of tracebacks. The actor starts without a model instead, marks
    every row (oom column MODEL_NOT_LOADED, the error), and the driver raises it."""
    import pandas as pd
    import pytest

    from janus_ray.columns import MODEL_NOT_LOADED, load_failure, oom_column
    from janus_ray.errors import WeightsError

    paths = write_images(tmp_path, 3)
    udf = actor(tmp_path, fail_on_load="model.pt does not match the dummy model")
    out = udf(decoded(tmp_path, row_columns(paths, ["a", "b", "c"])))
    assert list(out[stage_error_column("dummy")]) == [
        "model not loaded: WeightsError: Cannot load scorer 'dummy': model.pt does not match the dummy model"] * 3
    assert (out[oom_column("dummy")] == MODEL_NOT_LOADED).all() and np.isnan(out[output_column("dummy")]).all()
    assert all(cell == b"" for cell in out[pixel_column("dummy")])

    class Planned:
        metric, columns = "dummy", {"dummy": "DummyScore"}

    frame = pd.DataFrame({key: list(values) for key, values in out.items()})
    error = load_failure(frame, [Planned()])
    assert isinstance(error, WeightsError)
    assert str(error) == ("Cannot load scorer 'dummy': model.pt does not match the dummy model "
                          "(raised while the actors loaded their models).")
    good = pd.DataFrame({key: list(values) for key, values in actor(tmp_path)(
        decoded(tmp_path, row_columns(paths, ["a", "b", "c"]))).items()})
    assert load_failure(good, [Planned()]) is None
    spec = {"scorer": "dummy", "weights_root": str(tmp_path), "options": {"fail_on_load": "x"}}
    fused = FusedStage(decode={"metrics": {"dummy": spec}, "max_pixels": None},
                       metrics=[{"metric": "dummy", "device": "cpu", "dtype": None, **spec}])
    fused_out = fused(row_columns(paths, ["a", "b", "c"]))  # the fused stage builds its stages alike
    with pytest.raises(WeightsError, match="Cannot load scorer 'dummy': x"):
        raise load_failure(pd.DataFrame({key: list(values) for key, values in fused_out.items()}), [Planned()])


def test_the_error_sent_back_keeps_the_lines_naming_the_keys_and_is_bounded():
    """A new user's trial: HPSv2's error kept only 'Error(s) in loading state_dict for CLIP:',
    not the 'Missing key(s)' line after it."""
    from janus_ray.columns import LOAD_ERROR_CHARS, load_error_text
    from janus_ray.errors import WeightsError

    text = load_error_text(WeightsError("HPS_v2_compressed.pt is corrupt (RuntimeError: Error(s) in loading "
                                        "state_dict for CLIP:\n\tMissing key(s) in state_dict: \"text_projection\".)"))
    assert text == ("model not loaded: WeightsError: HPS_v2_compressed.pt is corrupt (RuntimeError: Error(s) in "
                    "loading state_dict for CLIP: Missing key(s) in state_dict: \"text_projection\".)")
    long = load_error_text(WeightsError("keys: " + "k" * 5000))
    assert long.endswith(" ...") and len(long) <= len("model not loaded: WeightsError: ") + LOAD_ERROR_CHARS
