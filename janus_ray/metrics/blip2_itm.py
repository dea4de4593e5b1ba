"""ITMScore: BLIP-2 Q-Former image-text matching probability (t2v_metrics ``blip2-itm`` semantics).

Score = softmax(ITM logits)[match], computed with transformers ``Blip2ForImageTextRetrieval`` from a
local HF folder (``<weights_root>/blip2-itm-vit-g``). The ITM head runs one joint query+text pass
with cross-attention to the image, so every (image, prompt) pair needs its own Q-Former pass; there
is no text-feature reuse as in dual encoders.

Optional ``legacy_itc_sigmoid=True`` adds the earlier tool's number, ``sigmoid`` of the ITC
max-over-queries cosine of each (image_i, text_i) pair, as variant ``itm_sigmoid_diag``. It is a
different head and NOT the ITM probability; it exists only for comparison with old result files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from janus_ray.errors import InputError, WeightsError
from janus_ray.metrics.base import (
    HFPilProcessorTransform,
    ImageTransform,
    Option,
    Scorer,
    boolean,
    hf_loading_report_silenced,
    unique_prompts,
)
from janus_ray.metrics.weights import RequiredFile, hf_weights_file, load_failure
from janus_ray.metrics.costs import ModelCost

if TYPE_CHECKING:  # annotations only: importing a scorer module must not import torch
    import torch

MODEL_DIR = "blip2-itm-vit-g"
#: t2v_metrics tokenises with padding='max_length', truncation=True, max_length=35 ([CLS] kept first)
MAX_TEXT_TOKENS = 35
LEGACY_VARIANT = "itm_sigmoid_diag"
LEGACY_COLUMN = "ITM_legacy_ITC_sigmoid"


def _model_dir(weights_root: Path) -> Path:
    return Path(weights_root) / MODEL_DIR


def _weights_file(folder: Path) -> RequiredFile:
    return hf_weights_file(folder, "BLIP-2 ITM weights")


class BlipPixelTransform(HFPilProcessorTransform):
    """PIL image -> float32 CHW pixels, as t2v's ``image_loader`` + transformers 4.49 BlipImageProcessor.

    ``convert('RGB')`` comes first, as t2v_metrics does: it drops alpha without compositing (the HF
    processor's own RGB conversion would composite RGBA onto white, giving different pixels). The
    PIL backend then resizes to 224x224 ignoring aspect ratio (PIL bicubic), rescales by 1/255 and
    normalises with the OpenAI CLIP mean/std, all from the folder's ``preprocessor_config.json``.
    (transformers 5 defaults to a torchvision backend whose resize differs; the PIL backend is
    bit-identical to 4.49.) Picklable: it holds only the processor's configuration.
    """


class ITMScorer(Scorer):
    """BLIP-2 ITM P(match) for each (image, prompt) pair; range (0, 1), higher is better."""

    name: ClassVar[str] = "itmscore"
    column: ClassVar[str] = "ITMScore"
    higher_is_better: ClassVar[bool] = True
    score_range: ClassVar[tuple[float | None, float | None]] = (0.0, 1.0)
    reference: ClassVar[str] = (
        "t2v_metrics 3.0 blip2-itm (softmax of the Q-Former ITM head, P(match)), computed with "
        "transformers Blip2ForImageTextRetrieval(use_image_text_matching_head=True), text max 35 tokens"
    )
    # t2v runs the whole forward under CUDA fp16 autocast (fp32 weights, fp32 softmax).
    cuda_dtype: ClassVar[str] = "float16"
    # 1.172 B params = the 4,688,228,520-byte fp32 model.safetensors / 4; EVA ViT-g (1 B) over 257
    # tokens + Q-Former ~ 550 GFLOP; activations ~0.05 GB per image under fp16 autocast (estimate)
    cost: ClassVar[ModelCost] = ModelCost(params=1.172e9, file_dtype="float32", activation_gb_per_image=0.05, gflops_per_image=550.0)
    # Empty by default: the legacy variant only exists when requested (see __init__).
    variant_columns: ClassVar[dict[str, str]] = {}
    accepted_options: ClassVar[dict[str, Option]] = {"legacy_itc_sigmoid": Option(False, boolean)}

    def __init__(
        self,
        weights_root: str | Path,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        **options: Any,
    ):
        # Per-instance variant columns: the base class reads self.variant_columns in score_pixels,
        # so an instance attribute shadows the (empty) class default for this scorer only.
        if self.check_options(options)["legacy_itc_sigmoid"]:
            self.variant_columns = {LEGACY_VARIANT: LEGACY_COLUMN}
        super().__init__(weights_root, device=device, dtype=dtype, **options)

    @classmethod
    def output_columns(cls, **options: Any) -> dict[str, str]:
        columns = {cls.name: cls.column}
        if cls.check_options(options)["legacy_itc_sigmoid"]:
            columns[LEGACY_VARIANT] = LEGACY_COLUMN
        return columns

    # ----- contract -----------------------------------------------------------------------
    @classmethod
    def required_files(cls, weights_root: Path, **options: Any) -> list[RequiredFile]:
        cls.check_options(options)
        folder = _model_dir(weights_root)
        return [
            RequiredFile(folder / "config.json", "BLIP-2 ITM model config"),
            _weights_file(folder),
            RequiredFile(folder / "preprocessor_config.json", "BLIP-2 image processor config"),
            RequiredFile(folder / "tokenizer_config.json", "BLIP-2 BERT tokenizer config"),
            RequiredFile(folder / "tokenizer.json", "BLIP-2 BERT tokenizer vocabulary", (folder / "vocab.txt",)),
        ]

    @classmethod
    def build_image_transform(cls, weights_root: Path, **options: Any) -> ImageTransform:
        from transformers import BlipImageProcessorPil

        cls.check_options(options)
        path = _model_dir(weights_root) / "preprocessor_config.json"
        try:
            processor = BlipImageProcessorPil.from_pretrained(_model_dir(weights_root), local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any parse failure means a bad file
            raise load_failure(cls.name, path, exc) from exc
        return BlipPixelTransform(processor)

    def load(self) -> None:
        import torch
        from transformers import AutoTokenizer, Blip2ForImageTextRetrieval

        folder = _model_dir(self.weights_root)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise load_failure(self.name, folder / "tokenizer_config.json", exc) from exc

        weights_file = _weights_file(folder).resolve()
        try:
            # fp32 weights always: on CUDA, fp16 autocast rounds Linear/Conv weights per op, which is
            # what LAVIS' fp16 ViT weights + autocast Q-Former amount to. Eager attention = the 4.49
            # (reference) attention maths.
            with hf_loading_report_silenced():  # its key mismatches are raised below
                model, info = Blip2ForImageTextRetrieval.from_pretrained(
                    folder,
                    local_files_only=True,
                    dtype=torch.float32,
                    attn_implementation="eager",
                    output_loading_info=True,
                )
        except Exception as exc:  # noqa: BLE001
            raise load_failure(self.name, weights_file, exc) from exc
        problems = {k: sorted(v) for k, v in info.items() if k != "error_msgs" and v}
        if problems or info.get("error_msgs"):
            raise WeightsError(
                f"Cannot load scorer {self.name!r}: {weights_file} does not match the "
                f"Blip2ForImageTextRetrieval architecture in {folder / 'config.json'}: "
                f"{problems or info['error_msgs']}"
            )
        # The vision post_layernorm eps is left as the config says (HF default 1e-6): the goldens
        # were computed with transformers 4.49 from_pretrained unpatched. (LAVIS' ln_vision uses 1e-5;
        # metrics-reference §3.5 item 4.)
        self.model = model.to(self.device).eval()
        self.num_query_tokens = self.model.query_tokens.shape[1]

    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """t2v_metrics' text call: [CLS] ... [SEP] padded/truncated to exactly 35 tokens."""
        return self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt"
        )

    def check_token_ids(self, prompts: list[str], input_ids: torch.Tensor) -> None:
        """Raise InputError for a prompt with a token the text embedding has no row for.

        The HF tokenizer of blip2-itm-vit-g adds an ``<image>`` token (for the processor's image
        placeholders) whose id equals the vocabulary size: a prompt containing the literal text
        ``<image>`` would index past the embedding (IndexError; a device-side assert on CUDA).
        That token has no embedding to score with, so the row fails with this reason (as
        VQAScore fails a prompt holding its ``<image>`` placeholder).
        """
        import torch
        rows = self.model.embeddings.word_embeddings.num_embeddings
        bad = (input_ids >= rows) | (input_ids < 0)
        for i in torch.nonzero(bad.any(dim=1)).flatten().tolist():
            tokens = sorted({self.tokenizer.convert_ids_to_tokens(int(t)) for t in input_ids[i][bad[i]]})
            raise InputError(
                f"itmscore: the prompt contains {', '.join(map(repr, tokens))}, a token the text "
                f"embedding has no row for ({rows} rows): {prompts[i]!r}"
            )

    def forward(self, pixel_values: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenize(prompts)
        self.check_token_ids(prompts, tokens["input_ids"])
        input_ids = tokens["input_ids"].to(self.device)
        text_mask = tokens["attention_mask"].to(self.device)
        # Reference policy: fp32 weights, the whole forward under fp16 autocast on CUDA (ViT,
        # Q-Former, ITM head), LayerNorm/softmax kept in fp32 as LAVIS does.
        with self.autocast():
            image_embeds = self.model.vision_model(pixel_values=pixel_values).last_hidden_state
            outputs = {self.name: self._itm_match_probability(image_embeds, input_ids, text_mask)}
            if LEGACY_VARIANT in self.variant_columns:
                outputs[LEGACY_VARIANT] = self._itc_sigmoid_diagonal(image_embeds, prompts)
        return outputs

    # ----- heads --------------------------------------------------------------------------
    def _itm_match_probability(
        self, image_embeds: torch.Tensor, input_ids: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        """softmax(mean over queries of itm_head(joint query+text Q-Former pass)), P(class 1)."""
        import torch
        model = self.model
        batch = image_embeds.shape[0]
        queries = model.query_tokens.expand(batch, -1, -1)
        # Queries and text attend to each other bidirectionally; queries are never masked. We build
        # the mask ourselves (HF forward strips leading ids instead when config.image_token_index is
        # set, which assumes processor-added <image> tokens; we tokenise without them).
        query_mask = torch.ones(queries.shape[:2], dtype=text_mask.dtype, device=text_mask.device)
        joint_mask = torch.cat([query_mask, text_mask], dim=1)
        joint_embeds = model.embeddings(input_ids=input_ids, query_embeds=queries)
        hidden = model.qformer(
            query_embeds=joint_embeds,
            query_length=self.num_query_tokens,
            attention_mask=joint_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=self._image_mask(image_embeds),
        ).last_hidden_state
        logits = model.itm_head(hidden[:, : self.num_query_tokens, :]).mean(dim=1)
        # t2v: the fp16 logits go through an fp32 softmax; class 1 = "match". (HF's docstring example
        # applies softmax twice; we do not.)
        return logits.float().softmax(dim=-1)[:, 1]

    def _itc_sigmoid_diagonal(self, image_embeds: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Legacy: sigmoid(max over queries of cos(query_i, text_i)), the diagonal of HF's ITC matrix.

        Only the (image_i, text_i) pairs are computed, not the full [B, B] matrix. No temperature
        (HF has none). Same 35-token text as the ITM score, as the goldens were made; the earlier
        tool did not truncate, so its values differ for prompts over 33 wordpieces. Follows the
        scorer's dtype: use dtype="float32" to reproduce the earlier tool's fp32 numbers.
        """
        import torch
        model = self.model
        batch = image_embeds.shape[0]
        query_states = model.qformer(
            query_embeds=model.query_tokens.expand(batch, -1, -1),
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=self._image_mask(image_embeds),
        ).last_hidden_state
        image_feats = torch.nn.functional.normalize(model.vision_projection(query_states), dim=-1)

        # The text-only pass does not see the image: run it once per unique prompt.
        unique, index = unique_prompts(prompts)
        tokens = self.tokenize(unique)
        text_states = model.qformer(
            query_embeds=model.embeddings(input_ids=tokens["input_ids"].to(self.device)),
            query_length=0,
            attention_mask=tokens["attention_mask"].to(self.device),
        ).last_hidden_state
        text_feats = torch.nn.functional.normalize(model.text_projection(text_states[:, 0, :]), dim=-1)
        text_feats = text_feats[index.to(text_feats.device)]

        # Per-pair dot products [B, Q] (no [B, Q, B] matrix), max over the queries.
        cosine = (image_feats.float() * text_feats.float().unsqueeze(1)).sum(dim=-1)
        return torch.sigmoid(cosine.max(dim=1).values)

    @staticmethod
    def _image_mask(image_embeds: torch.Tensor) -> torch.Tensor:
        import torch
        return torch.ones(image_embeds.shape[:2], dtype=torch.long, device=image_embeds.device)
