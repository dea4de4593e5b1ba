"""The decode stage without Ray: one decode per image, per-metric pixels, per-row errors."""

from __future__ import annotations

import numpy as np
from PIL import Image

from janus_ray.actors.decode_stage import (
    DecodeStage,
    pixel_column,
    release_pixels,
    row_pixels,
    source_column,
    stage_error_column,
    todo_column,
)
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
        transform = get_scorer_class(metric).build_image_transform(WEIGHTS_ROOT)
        expected = transform(Image.open(path))
        shipped = row_pixels(out, metric, 0)
        assert shipped.dtype == np.uint8  # rescale and normalise happen in the metric actor
        np.testing.assert_array_equal(transform.normalise_arrays([shipped]).numpy()[0], expected)
        assert out[stage_error_column(metric)][0] == ""
    assert out[source_column("hpsv2.1")][0] == "hpsv2" and out[pixel_column("hpsv2.1")][0] == b""


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


def test_square_images_ship_vqascore_and_clipscore_pixels_once_and_each_stage_releases_what_it_used():
    metrics = ["clipscore", "vqascore", "hpsv2", "hpsv2.1"]
    spec = {m: {"scorer": m, "weights_root": str(WEIGHTS_ROOT), "options": {}} for m in metrics}
    square = str(IMAGES_DIR / "astronaut.jpg")
    assert Image.open(square).size[0] == Image.open(square).size[1]
    wide = str(IMAGES_DIR / "coffee_wide.png")
    rows = {"image_path": np.array([square, wide], dtype=object), "decode_error": np.array(["", ""], dtype=object)}
    rows.update({todo_column(m): np.array([True, True]) for m in metrics})
    out = DecodeStage(spec, max_pixels=10_000_000)(rows)
    assert list(out[source_column("vqascore")]) == ["clipscore", ""]  # padding makes the wide one differ
    assert out[pixel_column("vqascore")][0] == b"" and len(out[pixel_column("vqascore")][1]) == 3 * 336 * 336
    release_pixels(out, "clipscore")  # vqascore still needs clipscore's row 0
    assert len(out[pixel_column("clipscore")][0]) == 3 * 336 * 336 and out[pixel_column("clipscore")][1] == b""
    release_pixels(out, "vqascore")
    assert not out[pixel_column("clipscore")].any() and not out[pixel_column("vqascore")].any()
    assert out[pixel_column("hpsv2")][0] != b""  # HPSv2 and HPSv2.1 still to run
    release_pixels(out, "hpsv2")
    assert out[pixel_column("hpsv2")][0] != b""  # HPSv2.1 reads HPSv2's pixels
    release_pixels(out, "hpsv2.1")
    assert not out[pixel_column("hpsv2")].any()


def test_score_uint8_equals_scoring_the_reference_float_pixels():
    """The metric actor's path (uint8 from the decode stage, normalised by the scorer) gives the
    scores of the float pixels, also for HPS sources of different sizes in one batch."""
    from janus_ray import load_scorer

    paths = [str(IMAGES_DIR / name) for name in ("astronaut.jpg", "coffee_wide.png", "tiny_17x9.png")]
    prompts = ["an astronaut", "a cup of coffee", "a tiny picture"]
    for metric in ("hpsv2", "imagereward"):
        scorer = load_scorer(metric, WEIGHTS_ROOT)
        images = [Image.open(p) for p in paths]
        arrays = [scorer.image_transform.to_uint8(image) for image in images]
        got = scorer.score_uint8(arrays, prompts)
        expected = scorer.score_pixels(scorer.preprocess(paths), prompts)
        np.testing.assert_allclose(got[metric], expected[metric], atol=1e-6)


def test_the_decode_stage_hashes_the_bytes_it_decodes(tmp_path):
    """The resume cache's key on a first run (the driver no longer reads the images): the sha256 of
    the bytes decoded, '' for a file that could not be read; Pillow's error names the file."""
    from janus_ray.cache import file_sha256
    from janus_ray.columns import IMAGE_SHA256

    corrupt = tmp_path / "bad.jpg"
    corrupt.write_bytes(b"not an image")
    good = IMAGES_DIR / "astronaut.jpg"
    out = stage()(batch([str(good), str(corrupt), str(tmp_path / "gone.jpg")]))
    assert list(out[IMAGE_SHA256]) == [file_sha256(good), file_sha256(corrupt), ""]
    assert out["decode_error"][0] == ""
    assert out["decode_error"][1] == f"unreadable image: UnidentifiedImageError: cannot identify image file {str(corrupt)!r}"
    assert out["decode_error"][2].startswith("unreadable image: FileNotFoundError")
