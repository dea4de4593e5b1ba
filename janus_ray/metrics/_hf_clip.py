"""Shared dual-encoder logic of the scorers built on a transformers ``CLIPModel`` folder.

CLIPScore (``clip-vit-large-patch14-336``) and PickScore (``PickScore_v1``) are the same
computation on different folders: the cosine of the L2-normalised projected image and text
embeddings. Each folder carries its own preprocessing and tokenizer files, which are used as is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from janus_ray.metrics.base import (
    HFPilProcessorTransform,
    Option,
    Scorer,
    TextFeatureCache,
    hf_loading_report_silenced,
    non_negative_int,
)
from janus_ray.metrics.weights import RequiredFile, hf_weights_file, load_failure

if TYPE_CHECKING:  # annotations only: importing a scorer module must not import torch
    import torch

#: CLIP's context length; the references tokenise with truncation=True, max_length=77.
CLIP_MAX_TOKENS = 77
#: Default bound of the prompt -> text-feature cache (a few MB even for ViT-H's 1024-d features).
DEFAULT_TEXT_CACHE_SIZE = 4096


class ClipPilImageTransform(HFPilProcessorTransform):
    """PIL image -> float32 CHW array: ``convert('RGB')`` then the folder's CLIP preprocessing.

    The references (transformers 4.49) ran the PIL-based ``CLIPImageProcessor``: PIL bicubic resize
    of the shortest edge, centre crop with floor offsets, x/255 in float64 cast to float32,
    normalise. transformers 5 keeps that path as ``CLIPImageProcessorPil``; its default
    ``CLIPImageProcessor`` resizes with torchvision and gives different pixels.
    t2v_metrics' image_loader converts to RGB before the processor: alpha is dropped, not
    composited, and 16-bit images are clipped to 255 (``prepare``). Split as
    ``HFPilProcessorTransform``: resize + crop in uint8, rescale + normalise in torch.
    """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.processor.size}, crop_size={self.processor.crop_size})"


class HFCLIPScorer(Scorer):
    """Base of the scorers that compare ``CLIPModel`` image and text embeddings from one HF folder.

    Subclasses set ``weights_folder`` and implement ``forward`` from :meth:`cosine`.
    Options: ``text_cache_size`` (int, default 4096; 0 disables the prompt -> features cache).
    """

    #: folder under the weights root holding config.json, weights, processor and tokenizer files
    weights_folder: ClassVar[str]
    accepted_options: ClassVar[dict[str, Option]] = {"text_cache_size": Option(DEFAULT_TEXT_CACHE_SIZE, non_negative_int)}

    # ----- files and preprocessing -------------------------------------------------------
    @classmethod
    def model_dir(cls, weights_root: Path) -> Path:
        return Path(weights_root) / cls.weights_folder

    @classmethod
    def required_files(cls, weights_root: Path, **options: Any) -> list[RequiredFile]:
        cls.check_options(options)
        folder = cls.model_dir(weights_root)
        tokenizer_json = (folder / "tokenizer.json",)
        return [
            RequiredFile(folder / "config.json", f"{cls.name} CLIPModel config"),
            hf_weights_file(folder, f"{cls.name} CLIPModel weights"),
            RequiredFile(folder / "preprocessor_config.json", f"{cls.name} image preprocessing"),
            RequiredFile(folder / "vocab.json", f"{cls.name} CLIP tokenizer vocabulary", tokenizer_json),
            RequiredFile(folder / "merges.txt", f"{cls.name} CLIP tokenizer BPE merges", tokenizer_json),
        ]

    @classmethod
    def build_image_transform(cls, weights_root: Path, **options: Any) -> ClipPilImageTransform:
        from transformers import CLIPImageProcessorPil

        cls.check_options(options)
        folder = cls.model_dir(weights_root)
        try:
            processor = CLIPImageProcessorPil.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # any parse/validation failure of the config file
            raise load_failure(cls.name, folder / "preprocessor_config.json", exc) from exc
        return ClipPilImageTransform(processor)

    # ----- model ----------------------------------------------------------------------------
    def load(self) -> None:
        import torch
        from transformers import CLIPModel, CLIPTokenizer

        folder = self.model_dir(self.weights_root)
        try:
            self.tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:
            raise load_failure(self.name, _broken_tokenizer_file(folder), exc) from exc
        weights_file = hf_weights_file(folder, "").resolve() or folder
        try:
            with hf_loading_report_silenced():  # its key mismatches are raised below
                model, info = CLIPModel.from_pretrained(
                    str(folder),
                    local_files_only=True,
                    dtype=torch.float32,
                    output_loading_info=True,
                )
        except Exception as exc:
            raise load_failure(self.name, weights_file, exc) from exc
        # Strict loading: from_pretrained only logs key mismatches and initialises missing tensors
        # at random, which would silently give meaningless scores.
        problems = {k: sorted(v) for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if (v := info.get(k))}
        if problems or info.get("error_msgs"):
            detail = "; ".join(f"{k}: {v[:5]}{' ...' if len(v) > 5 else ''}" for k, v in problems.items())
            raise load_failure(self.name, weights_file, ValueError(detail or str(info["error_msgs"])))
        # No pooling override needed: these legacy OpenAI/laion configs have text eos_token_id == 2,
        # for which transformers 5 still pools at argmax(input_ids), i.e. the first <|endoftext|>
        # (49407 is the highest id), as 4.49 did; PickScore pads with '!' (id 0), skipped by argmax.
        # A newer config (eos_token_id 49407) pools at the first 49407: the same position.
        # exp(logit_scale) taken in float32 before any cast, as PickScore's official formula uses it.
        self.logit_scale_exp = model.logit_scale.detach().float().exp().to(self.device)
        # fp32 is the references' precision; a bf16/fp16 request casts the weights, and features
        # are brought back to float32 before normalising.
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self._text_cache = TextFeatureCache(self.encode_prompts, self.settings["text_cache_size"])

    def tokenize(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and mask exactly as the references call the tokenizer (prompt verbatim)."""
        # HF's fast CLIP tokenizer: NFC + whitespace collapse + lowercase, no ftfy / html.unescape
        # ('&amp;' stays 3 tokens); truncation keeps <|endoftext|> as the 77th token.
        return self.tokenizer(
            list(prompts), padding=True, truncation=True, max_length=CLIP_MAX_TOKENS, return_tensors="pt"
        )

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected image embeddings (float32), one forward for the whole batch."""
        output = self.model.get_image_features(pixel_values=pixel_values.to(self.dtype))
        # transformers 5 returns a ModelOutput whose pooler_output is the projected embedding.
        return normalise(output.pooler_output.float())

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised projected text embeddings (float32) of distinct prompts, one forward."""
        tokens = self.tokenize(prompts).to(self.device)
        output = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        # Padding within a batch cannot reach the pooled <|endoftext|> position: attention is causal.
        return normalise(output.pooler_output.float())

    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """Features of each prompt; each distinct prompt is encoded once and cached (bounded LRU)."""
        return self._text_cache(prompts)

    def cosine(self, pixel_values: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Cosine similarity of each (image, prompt) pair, float32."""
        return (self.image_features(pixel_values) * self.text_features(prompts)).sum(dim=-1)

    def clear_text_cache(self) -> None:
        self._text_cache.clear()


def normalise(features: torch.Tensor) -> torch.Tensor:
    """x / ||x||, written as the references write it (not F.normalize, which clamps the norm)."""
    import torch
    return features / torch.norm(features, dim=-1, keepdim=True)


def _broken_tokenizer_file(folder: Path) -> Path:
    """Which CLIP tokenizer file to blame: vocab.json if it is not valid JSON, else merges.txt."""
    vocab = folder / "vocab.json"
    try:
        json.loads(vocab.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return vocab
    merges = folder / "merges.txt"
    return merges if merges.exists() else folder / "tokenizer.json"
