"""The scorer contract: a plain Python class, no Ray.

A scorer loads its model once in ``__init__`` and turns a batch of images + prompts into scores.
The work is split like a transformers pipeline, so the Ray pipeline can run the CPU part in a
separate stage:

* ``image_transform`` (built by the classmethod ``build_image_transform``, no model needed):
  one PIL image in its original mode -> float32 CHW numpy array, exactly the reference's pixels.
  It is a ``PixelTransform`` split in two for transport: ``to_uint8`` (PIL resize / crop / RGB,
  on the decode CPUs: uint8 CHW, 4x smaller than float32) and ``normalise`` (rescale and
  normalise in torch, in the metric actor, on its GPU when it has one);
* ``score_pixels(pixels, prompts)``: stacked float pixel tensor + prompts -> ``{column: scores}``;
* ``score_uint8(arrays, prompts)``: ``to_uint8`` outputs + prompts -> ``{column: scores}``;
* ``score`` / ``score_variants``: convenience over both, for paths or PIL images.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image

from janus_ray.errors import ConfigError, InputError
from janus_ray.images import ImageInput, open_image, to_rgb
from janus_ray.metrics.weights import RequiredFile, check_required
from janus_ray.metrics.costs import ModelCost

if TYPE_CHECKING:  # annotations only: importing a scorer module must not import torch
    import torch

ImageTransform = Callable[[Image.Image], np.ndarray]


class PixelTransform:
    """A scorer's preprocessing in two parts; ``__call__`` = both = the reference's float pixels.

    ``to_uint8``: PIL image (original mode) -> uint8 (3, H, W): every step that yields integers
    (mode handling, PIL / torchvision resize and crop). ``normalise``: uint8 (N, 3, H, W) tensor on
    any device -> float32 (N, 3, h, w): rescale and normalise (and any float-only step).
    Subclasses must be picklable (Ray ships them to the decode workers).
    """

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        raise NotImplementedError

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def normalise_arrays(self, arrays: Sequence[np.ndarray], device: torch.device | str = "cpu",
                         buffer: PixelBuffer | None = None) -> torch.Tensor:
        """``to_uint8`` outputs -> one float32 (N, 3, h, w) tensor on ``device`` (copied as uint8).

        ``buffer``: on CPU, the result is a view of this reusable buffer's storage (valid until its
        next use), which spares allocating and page-faulting a fresh batch tensor per call (77 MB
        per 64 images of 336 px). Raises ValueError if the images' pixels differ in shape."""
        import torch
        if not arrays:
            return torch.empty(0)
        if torch.device(device).type == "cuda" and all(a.shape == arrays[0].shape for a in arrays):
            return self.normalise(_to_device(np.stack(arrays), device))
        # On CPU one image at a time (the same elementwise ops, so the same bits): its float64 and
        # float32 intermediates (1.2 MB at 224 px) stay in cache, a whole batch's (77 MB for 64) do
        # not: measured 2.8 ms per 224 px image batched vs 1.0 ms one by one. Each result is copied
        # into the batch tensor while still in cache and then freed; keeping all of them for one
        # torch.cat cost 0.55 ms per 224 px image against 0.18 ms (64 images, one thread).
        first = self.normalise(_to_device(arrays[0][None], device))
        shape = (len(arrays), *first.shape[1:])
        out = (torch.empty(shape, dtype=first.dtype, device=first.device) if buffer is None
               else buffer.take(shape, first.dtype, first.device))
        out[:1] = first
        for i, array in enumerate(arrays[1:], start=1):
            pixels = self.normalise(_to_device(array[None], device))
            if pixels.shape[1:] != out.shape[1:]:
                raise ValueError(f"normalise_arrays: image {i} gives pixels of shape {tuple(pixels.shape[1:])}, "
                                 f"image 0 {tuple(out.shape[1:])}; a batch needs one shape")
            out[i:i + 1] = pixels
        return out

    def __call__(self, image: Image.Image) -> np.ndarray:
        import torch
        pixels = self.normalise(torch.from_numpy(np.ascontiguousarray(self.to_uint8(image)))[None])[0]
        return np.ascontiguousarray(pixels.numpy(), dtype=np.float32)


class PixelBuffer:
    """One reusable float tensor per thread for ``normalise_arrays``' batches (grown, never shrunk).

    A scorer scores batch after batch of the same shape; reusing one buffer spares the allocator
    a fresh mapping (and its page faults) per batch. What ``take`` returns is overwritten by the
    same thread's next ``take``: use it before then."""

    def __init__(self):
        import threading
        self._local = threading.local()

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A tensor of ``shape`` (uninitialised) on the buffer's storage."""
        import torch
        size = int(np.prod(shape))
        held = getattr(self._local, "tensor", None)
        if held is None or held.dtype != dtype or held.device != device or held.numel() < size:
            held = self._local.tensor = torch.empty(size, dtype=dtype, device=device)
        return held[:size].view(shape)


class HFPilProcessorTransform(PixelTransform):
    """A transformers PIL-backend image processor, split: resize / crop (uint8) | rescale + normalise.

    ``prepare`` (RGB conversion by default) runs first, on the PIL image. Picklable: it holds only
    the processor's configuration.
    """

    def __init__(self, processor: Any):
        self.processor = processor

    def prepare(self, image: Image.Image) -> Image.Image:
        return to_rgb(image)

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        pixels = self.processor(images=self.prepare(image), do_rescale=False, do_normalize=False,
                                return_tensors="np")["pixel_values"][0]
        return np.ascontiguousarray(pixels).astype(np.uint8, copy=False)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        import torch
        p = self.processor
        scale = p.rescale_factor if p.do_rescale else 1.0
        if p.do_normalize:
            return hf_rescale_normalise(pixels, scale, p.image_mean, p.image_std)
        return (pixels.to(torch.float64) * scale).to(torch.float32)


def _to_device(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    import torch
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def hf_rescale_normalise(pixels: torch.Tensor, scale: float, mean, std) -> torch.Tensor:
    """transformers' numpy ``rescale`` (x * scale in float64, then float32) and ``normalize``
    ((x - mean) / std in float32), on a uint8 (N, C, H, W) tensor: bit-identical on CPU."""
    import torch
    x = (pixels.to(torch.float64) * scale).to(torch.float32)
    mean = torch.as_tensor(list(mean), dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(list(std), dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def tv_to_tensor_normalise(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """torchvision ``to_tensor`` (x / 255 in float32) then ``normalize``, on uint8 (N, C, H, W)."""
    import torch
    x = pixels.to(torch.float32).div(255)
    mean = torch.as_tensor(list(mean), dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(list(std), dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)

#: the dtypes a scorer runs in, by name (torch.float32 ...; looked up in torch when a scorer is built)
DTYPES = ("float32", "bfloat16", "float16")


def resolve_device(device: str | torch.device) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N' -> torch.device, with a clear error when CUDA is absent."""
    import torch
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"Invalid device {device!r}: use 'cpu', 'cuda' or 'cuda:N'.") from exc
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"Invalid device {device!r}: use 'cpu', 'cuda' or 'cuda:N'.")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"Device {device!r} requested but CUDA is not available on this machine.")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device, cuda_default: str) -> torch.dtype:
    """None -> the reference's own precision on CUDA, float32 on CPU."""
    import torch
    if dtype is None:
        dtype = cuda_default if device.type == "cuda" else "float32"
    if isinstance(dtype, torch.dtype):
        if dtype not in [getattr(torch, name) for name in DTYPES]:
            raise ConfigError(f"Unsupported dtype {dtype}; choose one of {', '.join(DTYPES)}.")
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"Unsupported dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    return getattr(torch, dtype)


@contextmanager
def hf_loading_report_silenced() -> Iterator[None]:
    """Around ``from_pretrained(..., output_loading_info=True)``: transformers' own warnings off
    (its LOAD REPORT of missing / unexpected keys). The caller checks the loading info itself and
    raises a WeightsError naming the keys; the report, printed by an actor after the run's one-line
    error, ended with "those params were newly initialized", as if scoring went on with them."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def set_tf32(enabled: bool) -> None:
    """Opt-in TF32 for float32 matmuls and convolutions on CUDA (process-wide; off by default).

    TF32 keeps float32's range with a 10-bit mantissa in the tensor cores: several times faster
    matmuls for the fp32 metrics, at the cost of ~1e-3 relative rounding. No effect on CPU.
    """
    import torch
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


@dataclass(frozen=True)
class Option:
    """One scorer option: its default and a check that returns the value or raises ValueError
    saying what the value must be (``"must be a non-negative integer"``)."""

    default: Any = None
    check: Callable[[Any], Any] = lambda value: value


def non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("must be a non-negative integer")
    return value


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be a positive integer")
    return value


def non_negative_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError("must be a non-negative number")
    return float(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be True or False")
    return value


def optional_text(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError("must be a non-empty string")
    return value


class Scorer(abc.ABC):
    """Base class of every metric. Subclasses set the metadata and implement the abstract methods."""

    #: registry name, also the key of the primary score in ``score_variants``
    name: ClassVar[str]
    #: column name in janus_eval_scores.csv (compatible with the earlier tool)
    column: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    #: theoretical range of the primary score (None = unbounded)
    score_range: ClassVar[tuple[float | None, float | None]] = (None, None)
    #: the reference implementation whose numbers this scorer reproduces
    reference: ClassVar[str]
    #: precision the reference computes in on CUDA (used when dtype is None on CUDA)
    cuda_dtype: ClassVar[str] = "float32"
    #: dtypes this metric refuses, and why (checked before Ray starts: ``check_dtype``)
    unsupported_dtypes: ClassVar[dict[str, str]] = {}
    #: extra outputs of score_variants besides ``name``: {key: csv column}
    variant_columns: ClassVar[dict[str, str]] = {}
    #: cost and memory estimates for the planner (janus_ray/plan.py); None: unknown (planned as small)
    cost: ClassVar[ModelCost | None] = None
    #: a test / benchmark scorer (no model), not a metric
    testing_only: ClassVar[bool] = False

    @classmethod
    def check_dtype(cls, dtype: str | None) -> None:
        """Raise ConfigError if ``dtype`` (a name such as 'float16'; None: the default) is one this
        metric refuses (``unsupported_dtypes``)."""
        if dtype in cls.unsupported_dtypes:
            raise ConfigError(f"{cls.name}: {dtype} is not supported ({cls.unsupported_dtypes[dtype]})")
    #: the options this scorer accepts (``check_options`` rejects any other name)
    accepted_options: ClassVar[dict[str, Option]] = {}

    def __init__(
        self,
        weights_root: str | Path,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        **options: Any,
    ):
        import torch
        self.weights_root = Path(weights_root).expanduser()
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, self.cuda_dtype)
        #: the options as given (their implied ones included), and checked with defaults filled in
        self.options = options
        self.settings = self.check_options(options)
        check_required(self.required_files(self.weights_root, **options), self.name)
        self.image_transform = self.build_image_transform(self.weights_root, **options)
        self._pixel_buffer = PixelBuffer()  # score_uint8's batches on CPU (normalise_arrays)
        with torch.inference_mode():
            self.load()

    # ----- to implement -------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def required_files(cls, weights_root: Path, **options: Any) -> list[RequiredFile]:
        """Every file this scorer reads, for check-weights and the early, clear missing-file error."""

    @classmethod
    @abc.abstractmethod
    def build_image_transform(cls, weights_root: Path, **options: Any) -> PixelTransform:
        """A picklable ``PixelTransform``: PIL image (original mode) -> float32 CHW array. No model load."""

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model (once). Raise WeightsError naming the file on a corrupt checkpoint."""

    @abc.abstractmethod
    def forward(self, pixel_values: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Model math on a batch already on ``self.device``: {name: scores, variant: scores}."""

    # ----- shared plumbing ----------------------------------------------------------------
    @classmethod
    def check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Every accepted option, checked, with defaults for the absent ones.

        Raises ConfigError naming an unknown option and the accepted ones (a typo must not be
        ignored), or the option whose value is invalid and what it must be.
        """
        unknown = sorted(set(options) - set(cls.accepted_options))
        if unknown:
            allowed = ", ".join(cls.accepted_options) or "none"
            raise ConfigError(f"{cls.name}: unknown option(s) {', '.join(unknown)}; accepted: {allowed}.")
        checked = {}
        for key, option in cls.accepted_options.items():
            if key not in options:
                checked[key] = option.default
                continue
            try:
                checked[key] = option.check(options[key])
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{cls.name}: option {key} {exc}, got {options[key]!r}.") from exc
        return checked

    def autocast(self) -> AbstractContextManager:
        """The references' mixed precision: the forward under ``torch.autocast`` to ``self.dtype``
        (weights stay as loaded; autocast keeps LayerNorm / softmax in fp32); nothing in float32."""
        import torch
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    # ----- public API ---------------------------------------------------------------------
    def preprocess(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Open (if paths) and transform images into one stacked float32 pixel tensor on CPU."""
        import torch
        arrays = [self.image_transform(open_image(img)) for img in images]
        return torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0)

    def score_pixels(self, pixel_values: torch.Tensor | np.ndarray, prompts: Sequence[str]) -> dict[str, list[float]]:
        """Score pre-transformed pixels (from ``image_transform``) against prompts."""
        import torch
        prompts = [str(p) for p in prompts]
        if len(pixel_values) != len(prompts):
            raise InputError(f"{self.name}: got {len(pixel_values)} images but {len(prompts)} prompts.")
        if len(prompts) == 0:
            return {key: [] for key in (self.name, *self.variant_columns)}
        if isinstance(pixel_values, np.ndarray):
            pixel_values = torch.from_numpy(pixel_values)
        if self.device.type == "cuda" and not pixel_values.is_cuda:
            # pinned host memory makes the copy truly asynchronous
            pixel_values = pixel_values.pin_memory()
        pixel_values = pixel_values.to(self.device, non_blocking=True)
        with torch.inference_mode():
            outputs = self.forward(pixel_values, prompts)
        return {key: value.detach().float().cpu().tolist() for key, value in outputs.items()}

    def score_uint8(self, arrays: Sequence[np.ndarray], prompts: Sequence[str]) -> dict[str, list[float]]:
        """Score ``image_transform.to_uint8`` outputs: normalised here, on this scorer's device."""
        import torch
        if len(arrays) != len(prompts):
            raise InputError(f"{self.name}: got {len(arrays)} images but {len(prompts)} prompts.")
        if len(prompts) == 0:
            return {key: [] for key in (self.name, *self.variant_columns)}
        with torch.inference_mode():
            pixels = self.image_transform.normalise_arrays(list(arrays), self.device, self._pixel_buffer)
        return self.score_pixels(pixels, prompts)

    def score_variants(self, images: Sequence[ImageInput], prompts: Sequence[str]) -> dict[str, list[float]]:
        """All outputs of this scorer (primary score under ``name`` plus ``variant_columns``)."""
        if len(images) != len(prompts):
            raise InputError(f"{self.name}: got {len(images)} images but {len(prompts)} prompts.")
        return self.score_pixels(self.preprocess(images), prompts)

    def score(self, images: Sequence[ImageInput], prompts: Sequence[str]) -> list[float]:
        """One score per (image, prompt) pair; images are paths or PIL images in any mode."""
        return self.score_variants(images, prompts)[self.name]

    @classmethod
    def output_columns(cls, **options: Any) -> dict[str, str]:
        """Output key -> result column for these options (primary first, then variants)."""
        return {cls.name: cls.column, **cls.variant_columns}

    @classmethod
    def metadata(cls) -> dict[str, Any]:
        """Name, direction, range and reference, for reports and result files."""
        return {
            "name": cls.name,
            "column": cls.column,
            "higher_is_better": cls.higher_is_better,
            "range": list(cls.score_range),
            "reference": cls.reference,
            "variants": dict(cls.variant_columns),
            "testing_only": cls.testing_only,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weights_root={str(self.weights_root)!r}, device={self.device}, dtype={self.dtype})"


def unique_prompts(prompts: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Deduplicate prompts: (unique list, index of each input prompt into it)."""
    import torch
    position: dict[str, int] = {}
    index = [position.setdefault(p, len(position)) for p in prompts]
    return list(position), torch.tensor(index, dtype=torch.long)


class TextFeatureCache:
    """A bounded LRU of prompt -> text-feature row, shared by the dual-encoder scorers.

    ``cache(prompts)`` returns one row per prompt (duplicates allowed, shape (len(prompts), ...)),
    calling ``encode(missing)`` once for the distinct prompts not cached yet (it must return one
    row per prompt, in order). ``size`` 0 disables keeping anything between calls.
    """

    def __init__(self, encode: Callable[[list[str]], torch.Tensor], size: int):
        self.encode = encode
        self.size = size
        self._rows: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        import torch
        distinct, index = unique_prompts(prompts)
        missing = [p for p in distinct if p not in self._rows]
        fresh = dict(zip(missing, self.encode(missing))) if missing else {}
        rows = []
        for prompt in distinct:
            if prompt in fresh:
                rows.append(fresh[prompt])
            else:
                self._rows.move_to_end(prompt)
                rows.append(self._rows[prompt])
        if self.size:
            self._rows.update(fresh)
            while len(self._rows) > self.size:
                self._rows.popitem(last=False)
        stacked = torch.stack(rows)
        return stacked[index.to(stacked.device)]

    def __iter__(self) -> Iterator[str]:
        """The cached prompts, least recently used first."""
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        self._rows.clear()
