"""VQAScore with CLIP-FlanT5, as t2v_metrics 3.0 computes it (``clip-flant5-xxl`` / ``clip-flant5-xl``).

score = exp(-mean cross-entropy of the answer tokens ['▁Yes', '</s>']) given the image and the question
``Does this figure show "{prompt}"? Please answer yes or no.``, i.e. sqrt(P(Yes) * P(</s> | Yes)).

The model is rebuilt from plain transformers parts: ``CLIPVisionModel`` (tower) -> ``mlp2x_gelu``
projector -> ``T5ForConditionalGeneration`` (FlanT5), with the projected patch features spliced into
the encoder input in place of the ``<image>`` placeholder (metrics-reference.md section 1).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from PIL import Image

from janus_ray.errors import ConfigError, InputError, UnknownNameError, WeightsError
from janus_ray.images import to_rgb
from janus_ray.metrics.base import HFPilProcessorTransform, Option, Scorer
from janus_ray.metrics.weights import HF_WEIGHTS_FILES, RequiredFile, hf_weights_file, load_failure, read_json
from janus_ray.metrics.costs import ModelCost

if TYPE_CHECKING:  # annotations only: importing a scorer module must not import torch
    import torch
    from torch import nn

MODELS = ("clip-flant5-xxl", "clip-flant5-xl")
DEFAULT_MODEL = "clip-flant5-xxl"
DEFAULT_VISION_TOWER = "openai/clip-vit-large-patch14-336"

# t2v_metrics/constants.py SYSTEM_MSG and clip_t5_model.py templates ('t5_chat' conversation style).
SYSTEM_MSG = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
QUESTION_TEMPLATE = 'Does this figure show "{}"? Please answer yes or no.'
ANSWER = "Yes"
IMAGE_PLACEHOLDER = "<image>"
IMAGE_TOKEN_INDEX = -200  # LLaVA's placeholder id, replaced by the projected image features
MODEL_MAX_LENGTH = 2048  # t2v's tokenizer model_max_length; ids are cut here before the image expands

# Checkpoint key prefixes of t2v's CLIPT5ForConditionalGeneration (get_model() returns self).
TOWER_PREFIX = "vision_tower.vision_tower."
PROJECTOR_PREFIX = "mm_projector."
# Aliases of ``shared.weight`` in the checkpoint: T5 ties both stacks' embed_tokens to ``shared``, and
# CLIPT5 adds a top-level ``embed_tokens`` alias of encoder.embed_tokens. Same tensor when saved.
EMBEDDING_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "embed_tokens.weight")
# The weights-root CLIP folder is a full CLIPModel checkpoint; only its vision half is the tower.
CLIP_TEXT_SIDE = re.compile(r"^(text_model\.|text_projection\.|visual_projection\.|logit_scale$)")

#: T5 attention kernels: eager (default) is 4.49's only T5 attention and the closest to the
#: reference's bf16 rounding; sdpa is an opt-in speed-up (scripts/parity_report.py shows its drift).
T5_ATTENTION = ("eager", "sdpa")
DEFAULT_T5_ATTENTION = "eager"


def resolve_attention_option(value: Any) -> str:
    if value not in T5_ATTENTION:
        raise ValueError(f"must be one of {', '.join(T5_ATTENTION)}")
    return value


# ----- files -------------------------------------------------------------------------------------
def resolve_model_option(model: Any) -> str:
    if model not in MODELS:
        raise UnknownNameError("vqa model", str(model), MODELS)
    return model


def vision_tower_dir(weights_root: Path, model_dir: Path) -> tuple[Path, str]:
    """The local folder for the config's ``mm_vision_tower`` hub id: <weights_root>/<basename>.

    t2v loads the tower by hub name at model construction; offline, the users' weights root holds
    it under the repository's basename (``openai/clip-vit-large-patch14-336`` ->
    ``clip-vit-large-patch14-336``). Falls back to that default when the config cannot be read
    (the config's own problem is then reported by ``check_required``).
    """
    hub_id = DEFAULT_VISION_TOWER
    config_path = model_dir / "config.json"
    if config_path.is_file():
        try:
            hub_id = json.loads(config_path.read_text(encoding="utf-8")).get("mm_vision_tower") or hub_id
        except (OSError, ValueError):
            pass
    return weights_root / Path(str(hub_id).rstrip("/")).name, hub_id


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The CLIP-FlanT5 weight files: a single file or every shard of an index (safetensors preferred)."""
    for name in HF_WEIGHTS_FILES:
        path = model_dir / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path]
        weight_map = read_json(path, "vqascore").get("weight_map", {})
        return [model_dir / shard for shard in sorted(set(weight_map.values()))]
    return []


def listed_shards(model_dir: Path) -> list[Path]:
    """Shards named by the checkpoint's index, if it is sharded (an unreadable index lists none)."""
    for name in HF_WEIGHTS_FILES:
        if (model_dir / name).is_file():
            if not name.endswith(".index.json"):
                return []
            try:
                return checkpoint_files(model_dir)
            except WeightsError:
                return []
    return []


def iter_tensors(path: Path, keep=None) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of one checkpoint file, read as data only (safetensors or weights_only torch.load)."""
    import torch
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as archive:
                for name in archive.keys():
                    if keep is None or keep(name):
                        yield name, archive.get_tensor(name)
            return
        try:  # mmap keeps a 45 GB fp32 XXL checkpoint out of RAM while it is cast tensor by tensor
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any read failure is a corrupt weight file
        raise load_failure("vqascore", path, exc) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise load_failure("vqascore", path, TypeError("not a flat state_dict of tensors"))
    for name, tensor in state.items():
        if keep is None or keep(name):
            yield name, tensor


# ----- tokenizer ---------------------------------------------------------------------------------
class SentencePieceT5Tokenizer:
    """The ids of transformers 4.49's slow ``T5Tokenizer`` (legacy mode), from ``spiece.model``.

    transformers 5 only has the fast T5 tokenizer, whose ids can differ from the slow one that t2v
    uses (``use_fast=False``). The slow tokenizer: split the text on added tokens (``<pad>``,
    ``</s>``, ``<unk>``, ``<extra_id_N>``; an extra id also eats the whitespace around it), encode each
    remaining piece with sentencepiece, and append ``</s>`` unless the ids already end with it.
    """

    def __init__(self, model_dir: Path):
        import sentencepiece

        spiece_path = model_dir / "spiece.model"
        try:
            self.sp = sentencepiece.SentencePieceProcessor(model_file=str(spiece_path))
        except Exception as exc:  # noqa: BLE001
            raise load_failure("vqascore", spiece_path, exc) from exc
        config_path = model_dir / "tokenizer_config.json"
        config = read_json(config_path, "vqascore") if config_path.is_file() else {}
        if config.get("legacy") is False:
            raise WeightsError(
                f"{config_path}: legacy=False T5 tokenisation is not supported; t2v_metrics uses the "
                "default legacy slow tokenizer of google/flan-t5-* (remove the 'legacy' entry)."
            )
        self.pad_id, self.eos_id = self.sp.piece_to_id("<pad>"), self.sp.piece_to_id("</s>")
        if (self.pad_id, self.eos_id) != (0, 1):
            raise WeightsError(f"{spiece_path}: expected T5 ids <pad>=0 and </s>=1, got {self.pad_id} and {self.eos_id}.")
        # id -> (content, lstrip, rstrip) of the added tokens, as T5Tokenizer.__init__ defines them
        self.added: dict[int, tuple[str, bool, bool]] = {
            self.sp.piece_to_id(tok): (tok, False, False) for tok in ("<pad>", "</s>", "<unk>")
        }
        extra_ids = int(config.get("extra_ids", 100))
        for i in range(extra_ids):
            self.added[self.sp.get_piece_size() - 1 + extra_ids - i] = (f"<extra_id_{i}>", True, True)
        for token_id, spec in self._saved_added_tokens(model_dir, config).items():
            if spec.get("single_word"):
                raise WeightsError(f"{model_dir}: single_word added tokens are not supported ({spec['content']!r}).")
            self.added[int(token_id)] = (spec["content"], bool(spec.get("lstrip")), bool(spec.get("rstrip")))
        self.added_ids = {content: token_id for token_id, (content, _, _) in self.added.items()}
        self.strips = {content: (lstrip, rstrip) for content, lstrip, rstrip in self.added.values()}
        # Longest first, so an alternation finds what the slow tokenizer's trie finds.
        self.split_pattern = re.compile(
            "(" + "|".join(re.escape(t) for t in sorted(self.added_ids, key=len, reverse=True)) + ")"
        )

    @staticmethod
    def _saved_added_tokens(model_dir: Path, config: dict) -> dict:
        """Saved added-token specs ({id: {content, lstrip, rstrip, ...}}), with 4.49's precedence.

        tokenizer_config.json's ``added_tokens_decoder`` if present; otherwise the legacy files:
        added_tokens.json (no stripping), overridden by tokenizer.json's ``added_tokens``.
        """
        if "added_tokens_decoder" in config:
            return config["added_tokens_decoder"]
        specs: dict = {}
        legacy_path, fast_path = model_dir / "added_tokens.json", model_dir / "tokenizer.json"
        if legacy_path.is_file():
            for content, token_id in read_json(legacy_path, "vqascore").items():
                specs[int(token_id)] = {"content": content, "lstrip": False, "rstrip": False}
        if fast_path.is_file():
            for spec in read_json(fast_path, "vqascore").get("added_tokens", []):
                specs[int(spec["id"])] = spec
        return specs

    def __len__(self) -> int:
        """len(slow tokenizer) = distinct tokens of its vocab: sp pieces (added tokens override) + added."""
        pieces = {self.added[i][0] if i in self.added else self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())}
        return len(pieces | set(self.added_ids))

    def encode(self, text: str) -> list[int]:
        """``tokenizer(text).input_ids`` of the slow tokenizer."""
        parts = self.split_pattern.split(text)  # odd indices are added tokens
        for i in range(1, len(parts), 2):
            lstrip, rstrip = self.strips[parts[i]]
            if lstrip:
                parts[i - 1] = parts[i - 1].rstrip()
            if rstrip:
                parts[i + 1] = parts[i + 1].lstrip()
        ids: list[int] = []
        for i, part in enumerate(parts):
            if not part:
                continue
            ids.extend([self.added_ids[part]] if i % 2 else self.sp.encode(part))
        return ids if ids and ids[-1] == self.eos_id else [*ids, self.eos_id]


# ----- image transform ---------------------------------------------------------------------------
class SquarePadCLIPTransform(HFPilProcessorTransform):
    """t2v's CLIP-FlanT5 pixels: RGB, pad to a square with the mean colour, slow (PIL) CLIP processor.

    A module-level class so Ray can pickle it (it carries the image processor, no model). For a
    square image the uint8 part equals CLIPScore's (same tower processor), so the decode stage
    ships those pixels once.
    """

    #: pads to a square of the longest side: the decode stage's size guard bounds that allocation
    square_pad = True

    def __init__(self, processor: Any):
        super().__init__(processor)
        # t2v: expand2square(image, tuple(int(x*255) for x in image_processor.image_mean)) = (122, 116, 104)
        self.fill = tuple(int(x * 255) for x in processor.image_mean)

    def prepare(self, image: Image.Image) -> Image.Image:
        image = to_rgb(image)
        width, height = image.size
        if width != height:
            side = max(width, height)
            square = Image.new(image.mode, (side, side), self.fill)
            square.paste(image, ((side - width) // 2, (side - height) // 2))  # floor offsets, like t2v
            image = square
        return image


def load_image_processor(tower_dir: Path):
    # transformers 5's default CLIPImageProcessor is the torchvision backend; the 4.49 reference
    # used the PIL one (PIL bicubic resize), which CLIPImageProcessorPil reproduces.
    from transformers import CLIPImageProcessorPil

    config_path = tower_dir / "preprocessor_config.json"
    try:
        return CLIPImageProcessorPil.from_pretrained(str(tower_dir), local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise load_failure("vqascore", config_path, exc) from exc


# ----- scorer ------------------------------------------------------------------------------------
class VQAScorer(Scorer):
    """P('Yes') of CLIP-FlanT5 asked whether the image shows the prompt (t2v_metrics 3.0 VQAScore).

    Option ``model``: ``clip-flant5-xxl`` (default) or ``clip-flant5-xl``, read from
    ``<weights_root>/<model>/``; the vision tower comes from ``<weights_root>/clip-vit-large-patch14-336``.
    Option ``attn_implementation``: ``eager`` (default, the reference's T5 attention) or ``sdpa``
    (faster fused kernels; differs from the reference by rounding only).

    Precision: float32 reproduces the fp32 goldens. With bfloat16 (the CUDA default) the reference's
    policy is copied: every weight cast to bf16 (T5's ``wo`` included, which transformers'
    ``_keep_in_fp32_modules`` would otherwise keep in fp32), pixels rounded to bf16 before the tower,
    the forward under bf16 autocast, and the cross-entropy in fp32 on the bf16 logits.
    """

    name: ClassVar[str] = "vqascore"
    column: ClassVar[str] = "VQAScore"
    higher_is_better: ClassVar[bool] = True
    score_range: ClassVar[tuple[float | None, float | None]] = (0.0, 1.0)
    reference: ClassVar[str] = (
        "t2v_metrics 3.0 VQAScore (CLIPT5Model 'clip-flant5-xxl' / 'clip-flant5-xl', transformers 4.49)"
    )
    unsupported_dtypes: ClassVar[dict[str, str]] = {
        "float16": "FlanT5 activations overflow in fp16; use bfloat16, the reference's precision, or float32"}
    cuda_dtype: ClassVar[str] = "bfloat16"
    #: planner estimates per model option (shared/real-checkpoints.md for the sizes):
    costs_by_model: ClassVar[dict[str, ModelCost]] = {
        # 11.46 B params = ~23 GB of bf16 shards / 2 bytes; activations: T5-XXL encoder over 577 image
        # + ~30 text tokens (d_model 4096, 64 heads) ~0.25 GB per image in bf16 (estimate);
        # FLOPs: 2 x 5.5 B encoder params x ~610 tokens + 2 x 0.3 B tower x 577 tokens ~ 7 TFLOP
        "clip-flant5-xxl": ModelCost(params=11.46e9, file_dtype="bfloat16", activation_gb_per_image=0.25, gflops_per_image=7000.0),
        # 3.16 B params = the 6.32 GB bf16 pytorch_model.bin / 2; T5-XL encoder d_model 2048:
        # ~0.15 GB per image (estimate); 2 x 1.4 B x ~610 + 0.35 TFLOP tower ~ 2.1 TFLOP
        "clip-flant5-xl": ModelCost(params=3.16e9, file_dtype="bfloat16", activation_gb_per_image=0.15, gflops_per_image=2100.0),
    }
    cost: ClassVar[ModelCost] = costs_by_model[DEFAULT_MODEL]
    accepted_options: ClassVar[dict[str, Option]] = {
        "model": Option(DEFAULT_MODEL, resolve_model_option),
        "attn_implementation": Option(DEFAULT_T5_ATTENTION, resolve_attention_option),
    }

    # ----- files -------------------------------------------------------------------------------
    @classmethod
    def required_files(cls, weights_root: Path, model: str = DEFAULT_MODEL, **options: Any) -> list[RequiredFile]:
        model = cls.check_options({**options, "model": model})["model"]
        model_dir = Path(weights_root) / model
        tower_dir, hub_id = vision_tower_dir(Path(weights_root), model_dir)
        files = [
            RequiredFile(model_dir / "config.json", f"VQAScore {model} config"),
            hf_weights_file(model_dir, f"VQAScore {model} weights"),
            RequiredFile(model_dir / "spiece.model", f"VQAScore {model} T5 tokenizer"),
        ]
        files += [RequiredFile(shard, f"VQAScore {model} weight shard") for shard in listed_shards(model_dir)]
        tower = f"VQAScore vision tower (mm_vision_tower {hub_id!r})"
        files += [
            RequiredFile(tower_dir / "config.json", tower),
            RequiredFile(tower_dir / "preprocessor_config.json", tower),
            hf_weights_file(tower_dir, tower),
        ]
        return files

    @classmethod
    def build_image_transform(cls, weights_root: Path, model: str = DEFAULT_MODEL, **options: Any) -> SquarePadCLIPTransform:
        model = cls.check_options({**options, "model": model})["model"]
        model_dir = Path(weights_root) / model
        tower_dir, _ = vision_tower_dir(Path(weights_root), model_dir)
        return SquarePadCLIPTransform(load_image_processor(tower_dir))

    # ----- loading -----------------------------------------------------------------------------
    def load(self) -> None:
        import torch
        if self.dtype == torch.float16:
            self.check_dtype("float16")
        model_name = self.settings["model"]
        model_dir = self.weights_root / model_name
        config_path = model_dir / "config.json"
        config = read_json(config_path, self.name)
        self._check_multimodal_config(config, config_path)
        self.select_layer = int(config.get("mm_vision_select_layer", -2))
        self.select_feature = config.get("mm_vision_select_feature", "patch")

        self.tokenizer = SentencePieceT5Tokenizer(model_dir)
        self.prefix_ids = self.tokenizer.encode(SYSTEM_MSG + " USER: ")
        self.answer_ids = self.tokenizer.encode(ANSWER)
        self.decoder_start_id = int(config.get("decoder_start_token_id", self.tokenizer.pad_id))
        # t2v calls model.resize_token_embeddings(len(tokenizer)): embeddings AND lm_head (untied in
        # FlanT5) shrink to len(tokenizer) rows (32128 -> 32100), so the softmax runs over those only.
        self.vocab_rows = len(self.tokenizer)

        tower_dir, _ = vision_tower_dir(self.weights_root, model_dir)
        t5_state, tower_state, projector_state = self._read_checkpoint(model_dir)
        self.vision_tower = self._build_vision_tower(tower_dir, tower_state)
        self.mm_projector = self._build_projector(config, projector_state, model_dir)
        self.t5 = self._build_t5(config, t5_state, model_dir)
        tower_width = self.vision_tower.config.hidden_size
        if self.mm_projector[0].in_features != tower_width:
            raise WeightsError(
                f"{model_dir}: mm_projector expects {self.mm_projector[0].in_features}-d features but the "
                f"vision tower in {tower_dir} is {tower_width}-d."
            )

    @staticmethod
    def _check_multimodal_config(config: dict, path: Path) -> None:
        problems = []
        if config.get("model_type") not in ("clip_t5", "t5"):
            problems.append(f"model_type {config.get('model_type')!r} (expected 'clip_t5')")
        if config.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
            problems.append(f"mm_projector_type {config.get('mm_projector_type')!r} (expected 'mlp2x_gelu')")
        if config.get("mm_vision_select_feature", "patch") not in ("patch", "cls_patch"):
            problems.append(f"mm_vision_select_feature {config.get('mm_vision_select_feature')!r}")
        if not config.get("mm_vision_tower"):
            problems.append("no mm_vision_tower")
        if problems:
            raise WeightsError(f"{path} is not a CLIP-FlanT5 config: {'; '.join(problems)}.")

    def _place(self, tensor: torch.Tensor) -> torch.Tensor:
        """Cast floats to the compute dtype on the device as they are read (bounds peak host memory)."""
        if tensor.is_floating_point():
            return tensor.to(device=self.device, dtype=self.dtype)
        return tensor.to(device=self.device)

    def _read_checkpoint(self, model_dir: Path) -> tuple[dict, dict, dict]:
        """Split the CLIP-FlanT5 state_dict into T5, vision tower and projector parts; every key is routed."""
        import torch
        t5_state: dict[str, torch.Tensor] = {}
        tower_state: dict[str, torch.Tensor] = {}
        projector_state: dict[str, torch.Tensor] = {}
        aliases: dict[str, tuple[Path, torch.Tensor]] = {}
        for path in checkpoint_files(model_dir):
            for name, tensor in iter_tensors(path):
                if name.startswith(TOWER_PREFIX):
                    tower_state[name.removeprefix(TOWER_PREFIX)] = self._place(tensor)
                elif name.startswith(PROJECTOR_PREFIX):
                    projector_state[name.removeprefix(PROJECTOR_PREFIX)] = self._place(tensor)
                elif name in EMBEDDING_ALIASES:
                    aliases[name] = (path, tensor)
                else:
                    t5_state[name] = self._place(tensor)
        # All four names are one tied parameter in the reference model, so any one of them is the
        # embedding (the hub bot's safetensors conversion keeps only decoder.embed_tokens.weight);
        # loading several is a no-op when they agree, and a disagreeing copy would make the result
        # depend on load order.
        reference = "shared.weight"
        if "shared.weight" not in t5_state and aliases:
            reference = next(name for name in EMBEDDING_ALIASES if name in aliases)
            path, tensor = aliases.pop(reference)
            t5_state["shared.weight"] = self._place(tensor)
        shared = t5_state.get("shared.weight")
        for name, (path, tensor) in aliases.items():
            if shared is None or not torch.equal(self._place(tensor), shared):
                raise WeightsError(f"{path}: {name} differs from {reference} (it must be the same tied embedding).")
        return t5_state, tower_state, projector_state

    def _build_vision_tower(self, tower_dir: Path, checkpoint_tower: dict[str, torch.Tensor]) -> nn.Module:
        """HF CLIPVisionModel from the CLIP folder's config; weights from the CLIP-FlanT5 checkpoint if present.

        t2v builds the tower from ``mm_vision_tower`` (loading the CLIP folder's weights) inside the
        model's __init__, then from_pretrained loads the CLIP-FlanT5 state_dict over it: tower keys in
        the checkpoint win. When the checkpoint has none, the CLIP folder's vision weights are used.
        """
        import torch
        from transformers import CLIPVisionConfig, CLIPVisionModel

        try:
            vision_config = CLIPVisionConfig.from_pretrained(str(tower_dir), local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise load_failure(self.name, tower_dir / "config.json", exc) from exc
        with torch.device(self.device):  # random init is instant on GPU; every weight is replaced below
            tower = CLIPVisionModel(vision_config)
        tower.requires_grad_(False)
        expected = set(tower.state_dict())
        buffers = dict(tower.named_buffers())
        if checkpoint_tower:
            source = self.weights_root / self.settings["model"]
            state = self._tower_keys(checkpoint_tower, expected, buffers, source, ignore=None)
        else:
            weights = hf_weights_file(tower_dir, "vision tower").resolve()
            if weights is None:
                raise WeightsError(f"No weights in {tower_dir} for the VQAScore vision tower.")
            source = weights
            raw = {name: self._place(t) for name, t in iter_tensors(weights, keep=lambda n: not CLIP_TEXT_SIDE.match(n))}
            state = self._tower_keys(raw, expected, buffers, weights, ignore=CLIP_TEXT_SIDE)
        try:
            tower.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise load_failure(self.name, Path(source), exc) from exc
        return tower.to(device=self.device, dtype=self.dtype).eval()

    @staticmethod
    def _tower_keys(state: dict, expected: set[str], buffers: dict, source: Path, ignore) -> dict:
        """Map 4.49 names (``vision_model.X``) onto this transformers' CLIPVisionModel names, strictly.

        Checkpoints saved by older transformers also hold ``embeddings.position_ids``, a buffer that
        is non-persistent (rebuilt as arange) since 4.31; it is accepted only if it equals that arange.
        """
        import torch
        mapped, unexpected = {}, []
        for name, tensor in state.items():
            target = name if name in expected or name in buffers else name.removeprefix("vision_model.")
            if target in expected:
                mapped[target] = tensor
            elif target in buffers:
                if not torch.equal(tensor.to(buffers[target].device), buffers[target]):
                    raise WeightsError(f"{source}: {name} differs from the model's own {target} buffer.")
            elif ignore is None or not ignore.match(name):
                unexpected.append(name)
        missing = sorted(expected - set(mapped))
        if missing or unexpected:
            raise WeightsError(
                f"{source}: vision tower weights do not match CLIPVisionModel "
                f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {sorted(unexpected)[:5]})."
            )
        return mapped

    def _build_projector(self, config: dict, state: dict, model_dir: Path) -> nn.Module:
        """mlp2x_gelu: Linear(mm_hidden, d_model), exact-erf GELU, Linear(d_model, d_model)."""
        from torch import nn
        import torch
        d_model, mm_hidden = int(config["d_model"]), int(config.get("mm_hidden_size", 1024))
        with torch.device("meta"):
            projector = nn.Sequential(nn.Linear(mm_hidden, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        projector.requires_grad_(False)
        try:
            projector.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as exc:
            raise load_failure(self.name, model_dir, exc) from exc
        return projector.eval()

    def _build_t5(self, config: dict, state: dict, model_dir: Path) -> nn.Module:
        """FlanT5 from the clip_t5 config's T5 fields, loaded strictly with the vocabulary cut to len(tokenizer)."""
        import torch
        from transformers import T5Config, T5ForConditionalGeneration

        t5_fields = set(T5Config().to_dict()) - {"model_type", "architectures", "transformers_version", "dtype"}
        kwargs = {k: v for k, v in config.items() if k in t5_fields}
        # transformers 5 derives scale_decoder_outputs from tie_word_embeddings (False for FlanT5:
        # no d_model**-0.5 rescaling before lm_head, as in 4.49) and then forces ties on; the ties
        # are undone below by assigning lm_head its own tensor.
        kwargs["tie_word_embeddings"] = config.get("tie_word_embeddings", True)
        kwargs.update(vocab_size=self.vocab_rows, use_cache=False)
        # T5 in 4.49 is eager-only; eager is also the closest to its bf16 rounding (the default).
        attention = self.settings["attn_implementation"]
        t5_config = T5Config(**kwargs, attn_implementation=attention)

        for name in ("shared.weight", "lm_head.weight"):
            if name not in state:
                raise WeightsError(f"{model_dir}: checkpoint has no {name}.")
            if state[name].shape[0] < self.vocab_rows:
                raise WeightsError(
                    f"{model_dir}: {name} has {state[name].shape[0]} rows, fewer than the tokenizer's {self.vocab_rows}."
                )
            state[name] = state[name][: self.vocab_rows]
        # One tensor for the three embedding names (shared with the two stacks), as in the tied model.
        state["encoder.embed_tokens.weight"] = state["decoder.embed_tokens.weight"] = state["shared.weight"]
        with torch.device("meta"):
            t5 = T5ForConditionalGeneration(t5_config)
        t5.requires_grad_(False)
        # The known unused key of T5 checkpoints (never used by the decoder's cross-attention).
        state.pop("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight", None)
        try:
            t5.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as exc:
            raise load_failure(self.name, model_dir, exc) from exc
        return t5.eval()

    # ----- scoring -----------------------------------------------------------------------------
    def input_ids(self, prompt: str) -> list[int]:
        """The encoder ids t2v builds (before padding): tok(A) + [-200] + tok(B), cut at 2048.

        ``t5_tokenizer_image_token`` tokenises each '<image>'-separated chunk on its own, so each chunk
        ends with '</s>'; sentencepiece drops B's leading newline and the trailing spaces.
        """
        if IMAGE_PLACEHOLDER in prompt:
            # t2v splits the whole conversation at every '<image>' and then indexes a second image
            # that does not exist (IndexError): the reference cannot score such a prompt.
            raise InputError(f"vqascore: the prompt contains the literal {IMAGE_PLACEHOLDER!r}, which t2v_metrics cannot score: {prompt!r}")
        question = "\n" + QUESTION_TEMPLATE.format(prompt) + " ASSISTANT: "
        ids = [*self.prefix_ids, IMAGE_TOKEN_INDEX, *self.tokenizer.encode(question)]
        return ids[:MODEL_MAX_LENGTH]

    def _encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # The tower casts the pixels to its own dtype (bf16 rounding on CUDA), takes hidden_states
        # [mm_vision_select_layer] (before post_layernorm), drops CLS for 'patch', and casts the
        # features back to the pixel dtype before the projector.
        hidden = self.vision_tower(pixel_values=pixel_values.to(self.dtype), output_hidden_states=True).hidden_states
        features = hidden[self.select_layer]
        if self.select_feature == "patch":
            features = features[:, 1:]
        return self.mm_projector(features.to(pixel_values.dtype))

    def forward(self, pixel_values: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        import torch
        rows = [self.input_ids(p) for p in prompts]
        image_slot = len(self.prefix_ids)  # the same column in every row: the prefix is fixed
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        ids = ids.to(self.device)

        with self.autocast():
            image_features = self._encode_images(pixel_values)
            embed = self.t5.get_input_embeddings()
            text_before, text_after = embed(ids[:, :image_slot]), embed(ids[:, image_slot + 1 :])
            inputs_embeds = torch.cat([text_before, image_features.to(text_before.dtype), text_after], dim=1)
            # t2v's mask: (n_image - 1) ones prepended to ids != pad, so right padding (batched rows)
            # stays masked at the end; T5's relative position bias makes right padding harmless.
            attention_mask = torch.cat(
                [ids.new_ones(len(rows), image_features.shape[1] - 1), ids.ne(self.tokenizer.pad_id).long()], dim=1
            )
            labels = torch.tensor(self.answer_ids, device=self.device).expand(len(rows), -1)
            # T5 shift_right: the decoder reads [start, Yes] and predicts [Yes, </s>].
            decoder_input_ids = torch.cat([labels.new_full((len(rows), 1), self.decoder_start_id), labels[:, :-1]], dim=1)
            logits = self.t5(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids,
                use_cache=False,
            ).logits
        # CrossEntropyLoss(reduction='mean') over the answer tokens, in fp32 (autocast runs it in fp32).
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        token_nll = -log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        return {self.name: torch.exp(-token_nll.mean(dim=-1))}
