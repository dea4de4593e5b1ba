"""ImageReward v1.0 (THUDM), reproducing ``image-reward==1.5``'s ``ImageReward.score(prompt, path)``.

The model is BLIP: a ViT image encoder, and a BERT "MED" text encoder whose every layer
cross-attends to all image tokens; the [CLS] output goes through a linear head (five Linear
layers, no activations) and is standardised with two constants fitted by the authors.

The weights are hosted in transformers' ``BlipVisionModel`` and ``BlipTextModel``, which are
ports of the same BLIP ``vit.py`` / ``med.py`` modules (metrics-reference §6.5): the checkpoint
keys are renamed and loaded strictly.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image

from janus_ray.errors import WeightsError
from janus_ray.metrics.base import Option, PixelTransform, Scorer, tv_to_tensor_normalise, unique_prompts
from janus_ray.metrics.weights import LAYOUT_HELP, RequiredFile, load_failure, read_json
from janus_ray.metrics.costs import ModelCost

if TYPE_CHECKING:  # annotations only: importing a scorer module must not import torch
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

CHECKPOINT_FILE = Path("ImageReward") / "ImageReward.pt"
MED_CONFIG_FILE = Path("ImageReward") / "med_config.json"
# Not part of the published layout: lets a smaller ViT stand in for ViT-L (the test fixtures).
VISION_CONFIG_FILE = Path("ImageReward") / "vision_config.json"
TOKENIZER_DIR = Path("bert-base-uncased")

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The reference's reward standardisation (ImageReward.mean / ImageReward.std).
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072

# BLIP ViT-L/16, what ``BLIP_Pretrain(image_size=224, vit='large')`` builds.
DEFAULT_VISION = {"image_size": 224, "patch_size": 16, "width": 1024, "layers": 24, "heads": 16}
# BLIP's ViT: mlp_ratio 4, LayerNorm eps 1e-6 (transformers' Blip default is 1e-5).
VIT_MLP_RATIO = 4
VIT_LAYER_NORM_EPS = 1e-6

# The reference tokenises with padding='max_length', truncation=True, max_length=35.
MAX_TEXT_TOKENS = 35

# Hidden sizes after the input of the reward head (``ImageReward.MLP``); its Dropouts sit at
# Sequential indices 1, 3, 5, so the checkpoint's Linear keys are mlp.layers.{0,2,4,6,7}.
HEAD_SIZES = (1024, 128, 64, 16, 1)

# ViT key renames, BLIP -> transformers (the rules of transformers' convert_blip_original_pytorch_to_hf).
VISION_RENAMES = {
    "cls_token": "embeddings.class_embedding",
    "pos_embed": "embeddings.position_embedding",
    "patch_embed.proj.": "embeddings.patch_embedding.",
    "norm.": "post_layernorm.",
}
VISION_BLOCK_RENAMES = {
    "norm1.": "layer_norm1.",
    "norm2.": "layer_norm2.",
    "attn.qkv.": "self_attn.qkv.",
    "attn.proj.": "self_attn.projection.",
    "mlp.": "mlp.",
}
# Part of the reference module (BLIP_Pretrain's contrastive projections) but unused by score().
UNUSED_KEYS = ("blip.vision_proj.weight", "blip.vision_proj.bias", "blip.text_proj.weight", "blip.text_proj.bias")
# med.py registers position_ids as a persistent buffer, so checkpoints may carry it; transformers'
# buffer is non-persistent. It is checked to be the plain arange transformers uses.
POSITION_IDS_KEY = "blip.text_encoder.embeddings.position_ids"


def vision_settings(weights_root: Path, scorer_name: str) -> dict[str, int]:
    """The ViT size: vision_config.json when present, else BLIP ViT-L/16."""
    path = weights_root / VISION_CONFIG_FILE
    if not path.exists():
        return dict(DEFAULT_VISION)
    data = read_json(path, scorer_name)
    settings = {}
    for key, default in DEFAULT_VISION.items():
        value = data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise load_failure(scorer_name, path, ValueError(f"{key!r} must be a positive integer, got {value!r}"))
        settings[key] = value
    return settings


class ImageRewardTransform(PixelTransform):
    """PIL image (original mode) -> float32 CHW array, as ImageReward's ``_transform(224)``.

    Resize and crop run on the image in its ORIGINAL mode and RGB conversion comes after, as in the
    reference (``score`` opens the file without converting). Pillow then resizes palette/1-bit
    images with NEAREST whatever filter is asked, RGBA/LA with premultiplied alpha, and 16-bit
    images before their values are clipped to 8 bits; calling torchvision on the original-mode
    image reproduces all of that. Picklable (a plain instance of a module-level class).
    """

    def __init__(self, image_size: int = DEFAULT_VISION["image_size"]):
        self.image_size = image_size

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF
        image = TF.resize(image, self.image_size, interpolation=InterpolationMode.BICUBIC)
        image = TF.center_crop(image, self.image_size)  # torchvision's round-half-even offsets
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        # TF.to_tensor (x / 255 in float32) then TF.normalize, as the reference
        return tv_to_tensor_normalise(pixels, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_size={self.image_size})"


@functools.cache
def _model_classes() -> dict[str, type]:
    """``RewardHead`` and ``ImageRewardModel``, defined on first use: they subclass ``torch.nn.Module``,
    and importing this module (the driver's checks and planning) must not import torch. Reached as
    module attributes (``image_reward.ImageRewardModel``, PEP 562 ``__getattr__`` below)."""
    import torch
    from torch import nn

    class RewardHead(nn.Module):
        """ImageReward's MLP: Linear layers with Dropouts between them and NO activations.

        The ReLUs are commented out in the reference, so the head is affine; it is kept layer by layer
        (rather than folded into one Linear) to round like the reference. The Dropouts keep the
        checkpoint's Sequential indices.
        """

        def __init__(self, input_size: int):
            super().__init__()
            sizes = (input_size, *HEAD_SIZES)
            linears = [nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
            # Sequential(Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear)
            self.layers = nn.Sequential(
                linears[0], nn.Dropout(0.2), linears[1], nn.Dropout(0.2),
                linears[2], nn.Dropout(0.1), linears[3], linears[4],
            )  # fmt: skip

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return self.layers(features)

    class ImageRewardModel(nn.Module):
        """BLIP ViT + cross-attending BERT + reward head."""

        def __init__(self, vision_config, text_config):
            super().__init__()
            from transformers import BlipTextModel, BlipVisionModel

            self.vision = BlipVisionModel(vision_config)
            self.text = BlipTextModel(text_config, add_pooling_layer=False)
            self.head = RewardHead(text_config.hidden_size)

        def forward(
            self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
        ) -> torch.Tensor:
            """Raw head output (before standardisation), shape (batch,), float32."""
            image_embeds = self.vision(pixel_values=pixel_values).last_hidden_state
            image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
            # is_decoder=False: the bidirectional self-attention mask of med.py's 'multimodal' mode.
            text_output = self.text(
                input_ids=input_ids,
                attention_mask=attention_mask,
                encoder_hidden_states=image_embeds,
                encoder_attention_mask=image_mask,
                is_decoder=False,
            )
            # The reference casts the [CLS] feature to float32 before its (float32) head.
            features = text_output.last_hidden_state[:, 0, :].float()
            return self.head(features).squeeze(-1)

    for cls in (RewardHead, ImageRewardModel):
        cls.__qualname__ = cls.__name__  # pickled by name, through the module's __getattr__
    return {"RewardHead": RewardHead, "ImageRewardModel": ImageRewardModel}


def __getattr__(name: str) -> type:
    if name in ("RewardHead", "ImageRewardModel"):
        return _model_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def rename_prefix(name: str, renames: dict[str, str]) -> str | None:
    """Apply the first matching rename (a whole name, or a prefix ending in '.'); None if none matches."""
    for old, new in renames.items():
        if name == old or (old.endswith(".") and name.startswith(old)):
            return new + name[len(old) :]
    return None


def vision_key(name: str) -> str | None:
    """BLIP ViT key (without 'blip.visual_encoder.') -> BlipVisionModel key; None if not a ViT key."""
    if name.startswith("blocks."):
        _, block, rest = name.split(".", 2)
        renamed = rename_prefix(rest, VISION_BLOCK_RENAMES)
        return None if renamed is None else f"encoder.layers.{block}.{renamed}"
    return rename_prefix(name, VISION_RENAMES)


def checkpoint_key_of(model_key: str) -> str:
    """ImageRewardModel key -> the reference checkpoint key it is loaded from (for error messages)."""
    if model_key.startswith("text."):
        return "blip.text_encoder." + model_key.removeprefix("text.")
    if model_key.startswith("head.layers."):
        return "mlp.layers." + model_key.removeprefix("head.layers.")
    if model_key.startswith("vision.encoder.layers."):
        block, rest = model_key.removeprefix("vision.encoder.layers.").split(".", 1)
        original = rename_prefix(rest, {new: old for old, new in VISION_BLOCK_RENAMES.items()})
        return f"blip.visual_encoder.blocks.{block}.{original or rest}"
    if model_key.startswith("vision."):
        rest = model_key.removeprefix("vision.")
        original = rename_prefix(rest, {new: old for old, new in VISION_RENAMES.items()})
        return "blip.visual_encoder." + (original or rest)
    return model_key


def map_checkpoint_keys(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str], dict]:
    """Reference keys -> ImageRewardModel keys.

    Returns (mapped state_dict, {mapped key: checkpoint key} for error messages, the known
    reference keys that are deliberately not loaded). Keys that fit no rule are kept under their
    own name, so that the strict check reports them as unexpected.
    """
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    set_aside: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key in UNUSED_KEYS or key == POSITION_IDS_KEY:
            set_aside[key] = tensor
            continue
        target = None
        if key.startswith("blip.visual_encoder."):
            renamed = vision_key(key.removeprefix("blip.visual_encoder."))
            target = None if renamed is None else "vision." + renamed
        elif key.startswith("blip.text_encoder."):
            # med.py and transformers' BlipText* use identical module names.
            target = "text." + key.removeprefix("blip.text_encoder.")
        elif key.startswith("mlp.layers."):
            target = "head.layers." + key.removeprefix("mlp.layers.")
        target = target or key
        mapped[target] = tensor
        origin[target] = key
    return mapped, origin, set_aside


def describe_keys(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


class ImageRewardScorer(Scorer):
    """ImageReward v1.0 reward of (image, prompt): a standardised score, higher is better."""

    name: ClassVar[str] = "imagereward"
    column: ClassVar[str] = "ImageReward"
    higher_is_better: ClassVar[bool] = True
    score_range: ClassVar[tuple[float | None, float | None]] = (None, None)
    reference: ClassVar[str] = "image-reward 1.5: ImageReward.load(ImageReward.pt).score(prompt, image_path)"
    # The reference runs fully in float32 (no autocast).
    cuda_dtype: ClassVar[str] = "float32"
    # 447 M params = the 1.79 GB fp32 ImageReward.pt / 4; BLIP ViT-L/16 at 224 px (197 tokens) + BERT
    # cross-attention ~ 130 GFLOP; activations ~0.05 GB per image in fp32 (estimate)
    cost: ClassVar[ModelCost] = ModelCost(params=4.47e8, file_dtype="float32", activation_gb_per_image=0.05, gflops_per_image=130.0)
    #: ``checkpoint``: the earlier tool's --imagereward_ckpt path (default <weights-root>/ImageReward/ImageReward.pt)
    accepted_options: ClassVar[dict[str, Option]] = {"checkpoint": Option(None)}

    @staticmethod
    def checkpoint_path(weights_root: Path, checkpoint: str | Path | None = None) -> Path:
        """<weights-root>/ImageReward/ImageReward.pt, or the earlier tool's --imagereward_ckpt path."""
        return Path(checkpoint).expanduser() if checkpoint else Path(weights_root) / CHECKPOINT_FILE

    @classmethod
    def required_files(cls, weights_root: Path, checkpoint: str | None = None, **options: Any) -> list[RequiredFile]:
        cls.check_options(options)
        # ImageReward/vision_config.json is optional (absent: BLIP ViT-L/16), so it is not listed.
        return [
            RequiredFile(cls.checkpoint_path(weights_root, checkpoint), "ImageReward checkpoint (plain state_dict)"),
            RequiredFile(weights_root / MED_CONFIG_FILE, "ImageReward text encoder (BLIP MED) config"),
            RequiredFile(weights_root / TOKENIZER_DIR / "vocab.txt", "ImageReward tokenizer (bert-base-uncased)"),
        ]

    @classmethod
    def build_image_transform(cls, weights_root: Path, **options: Any) -> ImageRewardTransform:
        cls.check_options(options)
        return ImageRewardTransform(vision_settings(Path(weights_root), cls.name)["image_size"])

    # ----- loading ------------------------------------------------------------------------
    def load(self) -> None:
        import torch
        from transformers import BlipVisionConfig

        vision = vision_settings(self.weights_root, self.name)
        med_path = self.weights_root / MED_CONFIG_FILE
        med = read_json(med_path, self.name)
        vision_config = BlipVisionConfig(
            hidden_size=vision["width"],
            intermediate_size=vision["width"] * VIT_MLP_RATIO,
            num_hidden_layers=vision["layers"],
            num_attention_heads=vision["heads"],
            image_size=vision["image_size"],
            patch_size=vision["patch_size"],
            hidden_act="gelu",  # nn.GELU (exact erf form), as BLIP's ViT
            layer_norm_eps=VIT_LAYER_NORM_EPS,
            attn_implementation="eager",
        )
        text_config = self.text_config(med, med_path, encoder_width=vision["width"])
        self.tokenizer = self.load_tokenizer(text_config.vocab_size)

        # Built on the meta device: the checkpoint tensors are assigned (no random init, no copy).
        with torch.device("meta"):
            model = _model_classes()["ImageRewardModel"](vision_config, text_config)
        self.load_checkpoint(model, self.checkpoint_path(self.weights_root, self.settings["checkpoint"]))
        model.eval()
        # Encoders in the requested dtype; the head stays float32 like the reference's .float() + fp32 MLP.
        model.vision.to(self.device, self.dtype)
        model.text.to(self.device, self.dtype)
        model.head.to(self.device, torch.float32)
        self.model = model

    def text_config(self, med: dict[str, Any], med_path: Path, encoder_width: int):
        """BlipTextConfig from med_config.json (a BertConfig of BLIP's MED text encoder)."""
        from transformers import BlipTextConfig

        position_type = med.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise load_failure(
                self.name, med_path, ValueError(f"position_embedding_type {position_type!r} is not supported")
            )
        try:
            return BlipTextConfig(
                vocab_size=med["vocab_size"],
                hidden_size=med["hidden_size"],
                num_hidden_layers=med["num_hidden_layers"],
                num_attention_heads=med["num_attention_heads"],
                intermediate_size=med["intermediate_size"],
                hidden_act=med.get("hidden_act", "gelu"),
                layer_norm_eps=med.get("layer_norm_eps", 1e-12),
                max_position_embeddings=med.get("max_position_embeddings", 512),
                pad_token_id=med.get("pad_token_id", 0),
                # BlipTextConfig's generation defaults (bos 30522, eos 2, sep 102) are unused here
                # and out of range for small vocabularies.
                bos_token_id=None,
                eos_token_id=None,
                sep_token_id=None,
                # BLIP_Pretrain overrides med_config's encoder_width with the ViT width, so the
                # cross-attention key/value inputs are vision-sized whatever the file says.
                encoder_hidden_size=encoder_width,
                # Only so that transformers builds a cross-attention in every layer; the forward
                # pass uses is_decoder=False (bidirectional), as med.py's multimodal mode.
                is_decoder=True,
                attn_implementation="eager",
            )
        except KeyError as exc:
            raise load_failure(self.name, med_path, KeyError(f"missing field {exc.args[0]!r}")) from exc

    def load_tokenizer(self, vocab_size: int):
        """bert-base-uncased + BLIP's [DEC] bos and [ENC] special tokens (init_tokenizer())."""
        from transformers import BertTokenizer

        folder = self.weights_root / TOKENIZER_DIR
        try:
            tokenizer = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
            tokenizer.add_special_tokens({"bos_token": "[DEC]"})
            tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        except Exception as exc:  # any failure reading the folder is a weights problem
            raise load_failure(self.name, folder, exc) from exc
        # In a real BERT vocabulary the special tokens are base entries, not tokens added on load.
        missing = [t for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]") if tokenizer.convert_tokens_to_ids(t) >= tokenizer.vocab_size]
        if missing:  # a garbled vocab.txt would otherwise load and give meaningless scores
            raise WeightsError(
                f"Cannot load scorer {self.name!r}: {folder / 'vocab.txt'} lacks the BERT special tokens "
                f"{', '.join(missing)}; it is not a bert-base-uncased vocabulary.\n{LAYOUT_HELP}"
            )
        if len(tokenizer) > vocab_size:
            raise WeightsError(
                f"Cannot load scorer {self.name!r}: the tokenizer in {folder} has {len(tokenizer)} tokens "
                f"(with [DEC] and [ENC]) but {self.weights_root / MED_CONFIG_FILE} declares vocab_size "
                f"{vocab_size}; the tokenizer does not belong to this checkpoint.\n{LAYOUT_HELP}"
            )
        return tokenizer

    def load_checkpoint(self, model: ImageRewardModel, path: Path) -> None:
        """Strict load: every checkpoint key consumed, every model tensor filled."""
        import torch
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise load_failure(self.name, path, exc) from exc
        if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
            raise load_failure(self.name, path, TypeError("expected a plain state_dict of tensors"))

        mapped, origin, set_aside = map_checkpoint_keys(state_dict)
        model_keys = set(model.state_dict())
        # Missing keys are named by the checkpoint key the reference module would expect.
        missing = sorted(checkpoint_key_of(key) for key in model_keys - set(mapped))
        missing += [key for key in UNUSED_KEYS if key not in set_aside]
        unexpected = sorted(origin[key] for key in mapped if key not in model_keys)
        if missing or unexpected:
            vision_source = self.weights_root / VISION_CONFIG_FILE
            vision_source = vision_source if vision_source.exists() else "the BLIP ViT-L/16 defaults"
            raise WeightsError(
                f"Cannot load scorer {self.name!r}: {path} does not match the ImageReward model "
                f"(ViT size from {vision_source}, text encoder from {self.weights_root / MED_CONFIG_FILE}).\n"
                + (f"  missing keys ({len(missing)}): {describe_keys(missing)}\n" if missing else "")
                + (f"  unexpected keys ({len(unexpected)}): {describe_keys(unexpected)}\n" if unexpected else "")
                + LAYOUT_HELP
            )
        try:
            model.load_state_dict(mapped, strict=True, assign=True)
        except RuntimeError as exc:  # shape mismatches
            raise load_failure(self.name, path, exc) from exc

        # The one non-persistent buffer, still on meta: rebuild it, checking a stored copy agrees.
        embeddings = model.text.embeddings
        positions = torch.arange(embeddings.position_ids.shape[-1]).expand((1, -1))
        stored = set_aside.get(POSITION_IDS_KEY)
        if stored is not None and (stored.shape != positions.shape or not torch.equal(stored.long(), positions)):
            raise load_failure(
                self.name, path, ValueError(f"{POSITION_IDS_KEY} is not 0..{positions.shape[-1] - 1}")
            )
        embeddings.position_ids = positions
        still_empty = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if still_empty:
            raise WeightsError(
                f"Cannot load scorer {self.name!r}: {path} left tensors unfilled: {describe_keys(still_empty)}"
            )

    # ----- scoring ------------------------------------------------------------------------
    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """input_ids / attention_mask as the reference: [CLS] kept first (no [ENC]), 35 tokens, padded."""
        encoded = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def forward(self, pixel_values: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        distinct, index = unique_prompts(prompts)
        tokens = self.tokenize(distinct)
        # Each pair needs its own text pass (the text attends to its image), so only the
        # tokenisation is shared between repeated prompts.
        input_ids = tokens["input_ids"][index].to(self.device)
        attention_mask = tokens["attention_mask"][index].to(self.device)
        raw = self.model(pixel_values.to(self.dtype), input_ids, attention_mask)
        return {self.name: (raw - REWARD_MEAN) / REWARD_STD}
