"""Deliberate deviations on unusual inputs, pinned (README "Where janus_ray deliberately differs")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from janus_ray.images import open_image
from janus_ray.metrics import get_scorer_class

from ..conftest import WEIGHTS_ROOT

RED = (230, 20, 40)


def transform(name: str):
    return get_scorer_class(name).build_image_transform(WEIGHTS_ROOT)


@pytest.mark.parametrize("size", [(1, 1), (1, 40), (40, 1), (3, 40), (40, 3), (3, 3)])
@pytest.mark.parametrize("metric", ["clipscore", "pickscore", "itmscore", "vqascore"])
def test_images_with_a_1_or_3_pixel_side_are_read_as_images(metric, size):
    """transformers 4.49 guessed the channel axis from the array shape, so a (40, 3, 3) array became
    3 channels of 40x3 (garbled) or crashed; transformers 5 with an explicit PIL input reads the
    pixels. A solid image must stay the same solid colour after the processor."""
    image = Image.new("RGB", size, RED)
    pixels = transform(metric)(image)
    assert pixels.ndim == 3 and pixels.shape[0] == 3
    solid = transform(metric)(Image.new("RGB", (64, 64), RED))
    if metric == "vqascore" and size[0] != size[1]:
        # VQAScore pads to a square with the mean colour first; the thin red line stays visible in
        # the middle (the red channel rises above the fill's), not spread over a garbled array.
        fill = transform(metric)(Image.new("RGB", (64, 64), transform(metric).fill))
        middle = pixels[0, pixels.shape[1] // 2, pixels.shape[2] // 2]
        assert middle > fill[0, 0, 0] + 0.05
        assert np.allclose(pixels[:, 0, 0], fill[:, 0, 0], atol=1e-5)  # a corner is the padding
    else:
        np.testing.assert_allclose(pixels, solid, atol=1e-5)


def _oriented(path: Path, **save) -> Path:
    image = Image.new("RGB", (6, 2), (255, 0, 0))
    image.putpixel((0, 0), (0, 0, 255))
    image.save(path, **save)
    return path


def test_tiff_orientation_is_applied_by_pillow_but_jpeg_and_png_exif_orientation_is_not(tmp_path):
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[274] = 6  # rotate 90 degrees clockwise to display
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[274] = 6
    assert open_image(_oriented(tmp_path / "a.tif", tiffinfo=ifd)).size == (2, 6)  # transposed on open
    assert open_image(_oriented(tmp_path / "a.png", exif=exif)).size == (6, 2)  # as stored, like the references
    jpeg = open_image(_oriented(tmp_path / "a.jpg", exif=exif, quality=100))
    assert jpeg.size == (6, 2) and jpeg.getexif().get(274) == 6


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".png"])
def test_animated_images_are_scored_on_their_first_frame(tmp_path, suffix):
    frames = [Image.new("RGB", (32, 32), RED), Image.new("RGB", (32, 32), (10, 10, 250))]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as source:
        assert source.n_frames == 2
    for metric in ("clipscore", "hpsv2", "imagereward"):
        first = transform(metric)(open_image(path))
        still = transform(metric)(frames[0])
        np.testing.assert_allclose(first, still, atol=0.05)  # GIF's palette rounds the colour a little
