"""The decode stage without Ray: one decode per image, per-metric pixels, per-row errors."""

from __future__ import annotations

import numpy as np
from PIL import Image

from janus_ray.actors.decode_stage import DecodeStage, pixel_column, stage_error_column, todo_column
from janus_ray.metrics import get_scorer_class

from ..conftest import IMAGES_DIR, WEIGHTS_ROOT

METRICS = ["hpsv2", "hpsv2.1", "imagereward"]


def stage() -> DecodeStage:
    spec = {m: {"scorer": m, "weights_root": str(WEIGHTS_ROOT), "options": {}} for m in METRICS}
    return DecodeStage(spec, max_pixels=10_000_000)


def batch(paths: list[str], todo: bool = True) -> dict:
    n = len(paths)
    out = {"image_path": np.array(paths, dtype=object), "decode_error": np.array([""] * n, dtype=object)}
    out.update({todo_column(m): np.array([todo] * n) for m in METRICS})
    return out


def test_pixels_equal_each_scorers_own_transform_and_identical_transforms_are_shared(tmp_path):
    decode = stage()
    assert decode.same_as["hpsv2.1"] == "hpsv2"  # HPSv2 and HPSv2.1 preprocess identically
    path = str(IMAGES_DIR / "chelsea_palette.png")
    out = decode(batch([path]))
    for metric in METRICS:
        expected = get_scorer_class(metric).build_image_transform(WEIGHTS_ROOT)(Image.open(path))
        np.testing.assert_array_equal(out[pixel_column(metric)][0], expected)
        assert out[stage_error_column(metric)][0] == ""


def test_a_corrupt_file_and_an_oversized_image_cost_their_rows_only(tmp_path):
    corrupt = tmp_path / "bad.jpg"
    corrupt.write_bytes(b"not an image")
    big = tmp_path / "big.png"
    Image.new("RGB", (4000, 3000)).save(big)
    good = str(IMAGES_DIR / "astronaut.jpg")
    out = stage()(batch([str(corrupt), good, str(big)]))
    errors = list(out["decode_error"])
    assert errors[0].startswith("unreadable image") and errors[1] == ""
    assert "DecompressionBombError" in errors[2] and "exceeds the limit" in errors[2]
    assert out[pixel_column("hpsv2")].shape[0] == 3  # placeholders keep the column rectangular


def test_rows_already_scored_are_not_decoded():
    out = stage()(batch([str(IMAGES_DIR / "astronaut.jpg")], todo=False))
    assert not out[pixel_column("hpsv2")].any()
