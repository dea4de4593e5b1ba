"""CLIPScore: cosine of CLIP ViT-L/14-336 image and text embeddings (transformers ``CLIPModel``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from janus_ray.metrics._hf_clip import HFCLIPScorer
from janus_ray.metrics.costs import ModelCost

if TYPE_CHECKING:  # annotations only: importing a scorer module must not import torch
    import torch


class CLIPScorer(HFCLIPScorer):
    """Raw cosine of the normalised image and prompt embeddings, in [-1, 1].

    Reproduces the earlier tool's CLIPScore (t2v_metrics' formula on the HF folder
    ``clip-vit-large-patch14-336``): no x100, no 2.5 * max(cos, 0) rescaling. The HF config uses
    QuickGELU, so this equals open_clip <= 2.28's ``openai:ViT-L-14-336`` up to the tokenizer
    (HF fast: no ftfy / html unescape) and crop rounding (HF floor).
    """

    name = "clipscore"
    column = "CLIPScore"
    higher_is_better = True
    score_range = (-1.0, 1.0)
    reference = "t2v_metrics 3.0 CLIPScore formula on transformers CLIPModel (clip-vit-large-patch14-336), fp32"
    cuda_dtype = "float32"
    # 428 M params = the 1.71 GB fp32 pytorch_model.bin / 4; ViT-L/14 at 336 px: 577 tokens, ~190 GMAC
    # (open_clip model profile) + text ~ 380 GFLOP; activations ~0.08 GB per image in fp32 (estimate)
    cost = ModelCost(params=4.28e8, file_dtype="float32", activation_gb_per_image=0.08, gflops_per_image=380.0)
    weights_folder = "clip-vit-large-patch14-336"

    def forward(self, pixel_values: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        return {self.name: self.cosine(pixel_values, prompts)}
