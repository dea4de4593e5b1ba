"""Reading images exactly as the reference implementations read them, within bounded memory.

Every reference opens files with ``PIL.Image.open`` and applies no EXIF orientation; each scorer
then converts to RGB at the point its reference does (ImageReward resizes in the original mode
first). So the shared decode step keeps the image in its original mode.

The size guard runs on the header, before decoding, and bounds what the preprocessing will
allocate, not only the file's own pixels: a 60000x2 PNG is 120 kpx on disk, but a shortest-side
resize to 336 makes it 336 x 10,080,000 (3.4 Gpx), and VQAScore's square padding of a 1x100000
image is 10 Gpx. Such an image fails its row with the reason instead of killing the worker.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Union

from PIL import Image

ImageInput = Union[str, os.PathLike, Image.Image]

# Pillow's own decompression-bomb guard (~179 Mpx warns, twice that raises). We raise at the
# warning level: a generated image that large is a bug upstream, and it would stall a worker.
DEFAULT_MAX_PIXELS = 178_956_970
#: the largest side any scorer's transform resizes the shortest side to (CLIP ViT-L/14-336)
DEFAULT_TRANSFORM_SIDE = 336


class ImageSizeError(Image.DecompressionBombError):
    """The image, or what preprocessing would make of it, exceeds the pixel limit."""


def preprocessing_pixels(width: int, height: int, side: int = DEFAULT_TRANSFORM_SIDE,
                         square_pad: bool = True) -> tuple[int, str]:
    """(largest pixel count a transform allocates for a width x height image, what allocates it).

    Covers every transform kind our scorers use: the decoded image itself; a resize of the
    shortest side to ``side`` (CLIP, PickScore, ImageReward: the long side grows by the aspect
    ratio); padding to a square of the longest side (VQAScore, when ``square_pad``). Resizing the
    longest side down (HPS) or to a fixed square (BLIP) allocates less than these.
    """
    width, height = max(1, int(width)), max(1, int(height))
    longest, shortest = max(width, height), min(width, height)
    candidates = [(width * height, "the decoded image")]
    if shortest < side or longest > side:
        resized_long = math.ceil(side * longest / shortest)
        candidates.append((resized_long * side, f"the shortest side resized to {side} "
                                                f"({resized_long}x{side})"))
    if square_pad and width != height:
        candidates.append((longest * longest, f"square padding ({longest}x{longest})"))
    return max(candidates)


def check_image_size(width: int, height: int, max_pixels: int | None,
                     side: int = DEFAULT_TRANSFORM_SIDE, square_pad: bool = True) -> None:
    """Raise ImageSizeError when preprocessing a width x height image would exceed max_pixels."""
    if max_pixels is None:
        return
    if width * height > max_pixels:
        raise ImageSizeError(f"{width}x{height} = {width * height} pixels exceeds the limit of "
                             f"{max_pixels} (possible decompression bomb)")
    needed, what = preprocessing_pixels(width, height, side, square_pad)
    if needed > max_pixels:
        raise ImageSizeError(f"{width}x{height} image (aspect ratio {max(width, height) / max(1, min(width, height)):.0f}:1): "
                             f"preprocessing would allocate {needed} pixels for {what}, over the "
                             f"limit of {max_pixels} (max_image_pixels)")


def open_image(source: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS, *,
               side: int = DEFAULT_TRANSFORM_SIDE, square_pad: bool = True,
               decode: bool = True, data: bytes | None = None) -> Image.Image:
    """Open and fully decode an image (no EXIF transpose, original mode kept).

    The size guard (``check_image_size``) runs on the header first; by default it bounds every
    transform of every scorer (``side`` 336, square padding). ``max_pixels=None`` disables it.
    ``decode=False`` only reads the header (the guard alone; the returned image is closed).
    ``data``: the file's bytes, already read (the decode stage hashes them): decoded from memory,
    ``source`` then only names the file in messages.

    Raises:
        OSError / PIL.UnidentifiedImageError: unreadable or truncated file.
        ImageSizeError (a PIL DecompressionBombError): too many pixels for preprocessing.
    """
    if isinstance(source, Image.Image):
        check_image_size(source.width, source.height, max_pixels, side, square_pad)
        return source
    try:
        opened = Image.open(io.BytesIO(data) if data is not None else Path(source))
    except Image.UnidentifiedImageError:
        if data is None:
            raise
        # from memory Pillow names the buffer object: name the file, as it does when it opens a path
        raise Image.UnidentifiedImageError(f"cannot identify image file {str(source)!r}") from None
    except Image.DecompressionBombError as exc:  # Pillow's own limit, from the header: a size, not bad bytes
        raise ImageSizeError(f"{source}: {exc}") from None
    with opened as img:
        try:
            check_image_size(img.width, img.height, max_pixels, side, square_pad)
        except ImageSizeError as exc:
            raise ImageSizeError(f"{source}: {exc}") from None
        if decode:
            img.load()
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """``convert('RGB')`` as t2v_metrics' image_loader does (alpha dropped, 16-bit clipped)."""
    return img if img.mode == "RGB" else img.convert("RGB")
