"""HPSv2 and HPSv2.1: human-preference scores from an open_clip ViT-H/14 fine-tuned on HPD v2.

Reference: ``hpsv2.score(path, prompt, hps_version)`` (hpsv2 1.2.0, ``hpsv2/img_score.py``): the
cosine of open_clip's L2-normalised image and text features, no logit scale. Both versions share
the code and differ only in the checkpoint.

Reproduced quirks of the reference:

* Letterbox preprocessing on the float tensor (``ResizeMaxSize``): ToTensor first, then resize the
  LONGEST side to 224 with torchvision bicubic + antialias (no uint8 rounding, no clamping), new size
  ``round(dim * 224 / max(h, w))`` (Python's round), pad with 0.0 -- black before normalisation --
  with ``pad // 2`` on the left/top, then OpenAI mean/std. No centre crop.
* open_clip's tokenizer (ftfy, HTML unescape, whitespace collapse, lowercase), 77 tokens, EOT kept.
* Precision: fp32 weights; on CUDA the reference runs the model and the final dot product under
  ``torch.cuda.amp.autocast()`` (fp16), so its score is an fp16 number. With dtype float16 (the CUDA
  default) we autocast the same way; float32 is pure fp32 (what the reference does on CPU).

Deliberate deviations, only where the reference raises:

* RGBA is converted to RGB (alpha dropped): the reference keeps 4 channels and crashes in conv1.
  Our score equals the reference's on ``Image.open(p).convert('RGB')``.
* An image whose longest side is already 224 is padded to 224x224 like any other: the reference
  skips the resize *and* the padding, so a non-square one crashes at the positional embedding.
* A side that would round to 0 pixels is kept at 1 pixel (the reference's resize would fail).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image

from janus_ray.metrics.base import ImageTransform, PixelTransform, Scorer, TextFeatureCache
from janus_ray.metrics.weights import RequiredFile, load_failure
from janus_ray.metrics.costs import ModelCost

if TYPE_CHECKING:  # annotations only: importing a scorer module must not import torch
    import open_clip
    import torch
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

HPS_FOLDER = "HPSv2"
#: optional architecture override (open_clip model_cfg JSON); absent = open_clip's ViT-H-14
CONFIG_FILE = "open_clip_config.json"
ARCHITECTURE = "ViT-H-14"
#: open_clip.OPENAI_DATASET_MEAN / _STD (the reference's preprocess_val), written out so that importing
#: this module does not import open_clip and torch (tests check they are open_clip's)
OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)
#: prompts whose text features are kept between batches (typical runs score many images per prompt)
TEXT_CACHE_SIZE = 4096


@dataclass(frozen=True)
class LetterboxTransform(PixelTransform):
    """PIL image -> float32 CHW array, the reference's ``preprocess_val`` (letterbox, not crop).

    The reference converts to a float tensor first and resizes that (no uint8 rounding), so the
    uint8 part is the RGB source itself at its own size; ``normalise`` letterboxes and normalises.
    A frozen dataclass so that Ray can pickle it.
    """

    size: int
    mean: tuple[float, ...] = OPENAI_DATASET_MEAN
    std: tuple[float, ...] = OPENAI_DATASET_STD

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        # Deviation: the reference keeps RGBA (4 channels) and crashes; every other mode -> RGB.
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode
        import torchvision.transforms.functional as TF
        import torch
        pixels = pixels.to(torch.float32).div(255)  # TF.to_tensor
        height, width = pixels.shape[-2:]
        longest = max(height, width)
        if longest != self.size:
            scale = self.size / float(longest)
            # Python round (half to even) as the reference; >= 1 where the reference would crash.
            new_size = [max(1, round(height * scale)), max(1, round(width * scale))]
            # Resize the float tensor (no uint8 rounding, no clamp), as the reference's ToTensor-first order.
            pixels = TF.resize(pixels, new_size, InterpolationMode.BICUBIC, antialias=True)
        # Always pad to a square (the reference skips this when the longest side is already `size`,
        # and then crashes for non-square images).
        pad_h, pad_w = self.size - pixels.shape[-2], self.size - pixels.shape[-1]
        if pad_h or pad_w:
            # 0.0 before normalisation = black; left/top get the smaller half, as F.pad in the reference.
            pixels = torch.nn.functional.pad(
                pixels, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0
            )
        return TF.normalize(pixels, list(self.mean), list(self.std))


def load_model_config(weights_root: Path, scorer_name: str) -> dict[str, Any]:
    """The open_clip model_cfg: ``HPSv2/open_clip_config.json`` if present, else built-in ViT-H-14."""
    import open_clip
    path = weights_root / HPS_FOLDER / CONFIG_FILE
    if not path.exists():
        config = open_clip.get_model_config(ARCHITECTURE)
        if config is None:  # would mean open_clip dropped its ViT-H-14 config
            raise RuntimeError(f"open_clip {open_clip.__version__} has no built-in {ARCHITECTURE} config")
        return config
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        config = copy.deepcopy(config.get("model_cfg", config))  # bare model_cfg or HF-hub layout
        for key in ("embed_dim", "vision_cfg", "text_cfg"):
            if key not in config:
                raise ValueError(f"missing key {key!r}")
        # HPS is a plain open_clip CLIP (own ViT + own text transformer); other towers are not HPS.
        if config.get("custom_text") or "timm_model_name" in config["vision_cfg"] or "hf_model_name" in config["text_cfg"]:
            raise ValueError("only plain open_clip CLIP configs (no timm / HF towers) describe HPS")
        if not isinstance(config["vision_cfg"].get("image_size", 224), int):
            raise ValueError("vision_cfg.image_size must be one integer (the letterbox is square)")
    except (OSError, ValueError) as exc:
        raise load_failure(scorer_name, path, exc) from exc
    return config


class HPSv2Scorer(Scorer):
    """HPSv2 (v2.0 checkpoint): cosine of HPS image/text features, in [-1, 1], higher is better."""

    name: ClassVar[str] = "hpsv2"
    column: ClassVar[str] = "HPSv2Score"
    higher_is_better: ClassVar[bool] = True
    score_range: ClassVar[tuple[float | None, float | None]] = (-1.0, 1.0)
    reference: ClassVar[str] = "hpsv2 1.2.0: hpsv2.score(image, prompt, hps_version='v2.0')"
    # The reference computes under fp16 autocast on CUDA (weights stay fp32).
    cuda_dtype: ClassVar[str] = "float16"
    # ViT-H-14 (986 M params; the 1.97 GB fp16 checkpoint / 2), ~330 GFLOP per image at 224 px as
    # PickScore; activations ~0.03 GB per image under fp16 autocast (estimate)
    cost: ClassVar[ModelCost] = ModelCost(params=9.86e8, file_dtype="float16", activation_gb_per_image=0.03, gflops_per_image=330.0)
    checkpoint_name: ClassVar[str] = "HPS_v2_compressed.pt"

    @classmethod
    def checkpoint_path(cls, weights_root: Path) -> Path:
        return weights_root / HPS_FOLDER / cls.checkpoint_name

    @classmethod
    def required_files(cls, weights_root: Path, **options: Any) -> list[RequiredFile]:
        cls.check_options(options)
        return [RequiredFile(cls.checkpoint_path(weights_root), f"{cls.name} checkpoint (xswu/HPSv2)")]

    @classmethod
    def build_image_transform(cls, weights_root: Path, **options: Any) -> ImageTransform:
        cls.check_options(options)
        config = load_model_config(weights_root, cls.name)
        return LetterboxTransform(size=config["vision_cfg"].get("image_size", 224))

    def load(self) -> None:
        import open_clip
        import torch
        config = load_model_config(self.weights_root, self.name)
        context_length = config["text_cfg"].get("context_length", 77)
        # Built directly from the config (not create_model): no pretrained tag, no download, no
        # change to open_clip's global model registry. No quick_gelu: HPS ViT-H-14 uses nn.GELU.
        model = open_clip.CLIP(**config)
        path = self.checkpoint_path(self.weights_root)
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            state_dict = self._state_dict(checkpoint)
            # Strict, like the reference: every parameter comes from the HPS checkpoint (fp16 entries
            # are copied into the fp32 parameters, as load_state_dict does in the reference).
            model.load_state_dict(state_dict, strict=True)
        except Exception as exc:  # any failure reading the file: name the file
            raise load_failure(self.name, path, exc) from exc
        self.model = model.to(self.device).eval()
        self.tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
        self._text_cache = TextFeatureCache(self.encode_prompts, TEXT_CACHE_SIZE)

    @staticmethod
    def _state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
        """``checkpoint['state_dict']`` (the HPS format); a bare or DDP ('module.') dict is accepted."""
        if not isinstance(checkpoint, dict):
            raise ValueError(f"expected a dict with 'state_dict', got {type(checkpoint).__name__}")
        state_dict = checkpoint.get("state_dict", checkpoint)
        if not isinstance(state_dict, dict) or not state_dict:
            raise ValueError("'state_dict' is empty or not a dict")
        if all(key.startswith("module.") for key in state_dict):
            state_dict = {key[len("module."):]: value for key, value in state_dict.items()}
        return state_dict

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """open_clip token ids, shape (len(prompts), context_length)."""
        return self.tokenizer(prompts)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Normalised text features of distinct prompts, one forward."""
        return self.model.encode_text(self.tokenize(prompts).to(self.device), normalize=True)

    def forward(self, pixel_values: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        import torch
        with self.autocast():  # the reference's torch.cuda.amp.autocast() (fp16 on CUDA)
            image_features = self.model.encode_image(pixel_values, normalize=True)
            text_features = self._text_cache(prompts)  # each distinct prompt encoded once, then cached
            # Row-wise dot product as a matmul, so under autocast it runs (and rounds) in fp16 like
            # the reference's diag(image_features @ text_features.T). No logit scale.
            scores = torch.matmul(image_features.unsqueeze(1), text_features.unsqueeze(2)).reshape(-1)
        return {self.name: scores.float()}


class HPSv21Scorer(HPSv2Scorer):
    """HPSv2.1 (v2.1 checkpoint): same model and formula; scores are not comparable with v2.0."""

    name: ClassVar[str] = "hpsv2.1"
    column: ClassVar[str] = "HPSv2.1Score"
    reference: ClassVar[str] = "hpsv2 1.2.0: hpsv2.score(image, prompt, hps_version='v2.1')"
    checkpoint_name: ClassVar[str] = "HPS_v2.1_compressed.pt"
