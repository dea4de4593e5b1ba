"""Reading images exactly as the reference implementations read them.

Every reference opens files with ``PIL.Image.open`` and applies no EXIF orientation; each scorer
then converts to RGB at the point its reference does (ImageReward resizes in the original mode
first). So the shared decode step keeps the image in its original mode.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from PIL import Image

ImageInput = Union[str, os.PathLike, Image.Image]

# Pillow's own decompression-bomb guard (~179 Mpx warns, twice that raises). We raise at the
# warning level: a generated image that large is a bug upstream, and it would stall a worker.
DEFAULT_MAX_PIXELS = 178_956_970


def open_image(source: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image (no EXIF transpose, original mode kept).

    Raises:
        OSError / PIL.UnidentifiedImageError: unreadable or truncated file.
        Image.DecompressionBombError: more than ``max_pixels`` pixels.
    """
    if isinstance(source, Image.Image):
        return source
    with Image.open(Path(source)) as img:
        if max_pixels is not None and img.width * img.height > max_pixels:
            raise Image.DecompressionBombError(
                f"{source}: {img.width}x{img.height} = {img.width * img.height} pixels exceeds the "
                f"limit of {max_pixels} (possible decompression bomb)"
            )
        img.load()
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """``convert('RGB')`` as t2v_metrics' image_loader does (alpha dropped, 16-bit clipped)."""
    return img if img.mode == "RGB" else img.convert("RGB")
