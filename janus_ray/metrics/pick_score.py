"""PickScore v1: CLIP ViT-H/14 fine-tuned on Pick-a-Pic human preferences (transformers ``CLIPModel``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from janus_ray.metrics._hf_clip import HFCLIPScorer
from janus_ray.metrics.costs import ModelCost

if TYPE_CHECKING:  # annotations only: importing a scorer module must not import torch
    import torch


class PickScorer(HFCLIPScorer):
    """PickScore from the ``PickScore_v1`` folder (model and its own processor files).

    * ``pickscore`` (primary): the bare cosine in [-1, 1], what t2v_metrics' PickScoreModel returns
      (and hence the earlier tool's PickScore column).
    * ``pickscore_scaled``: ``exp(logit_scale) * cosine`` (~100 x cosine), the official PickScore
      README formula.
    """

    name = "pickscore"
    column = "PickScore"
    higher_is_better = True
    score_range = (-1.0, 1.0)
    reference = "t2v_metrics 3.0 PickScoreModel (pickscore-v1) on transformers CLIPModel, fp32"
    cuda_dtype = "float32"
    # ViT-H-14 CLIP: 986 M params (open_clip model profile), fp32 checkpoint; ~162 GMAC image + text
    # ~ 330 GFLOP at 224 px; activations ~0.05 GB per image in fp32 (257 tokens x 1280; estimate)
    cost = ModelCost(params=9.86e8, file_dtype="float32", activation_gb_per_image=0.05, gflops_per_image=330.0)
    variant_columns = {"pickscore_scaled": "PickScore_scaled"}
    weights_folder = "PickScore_v1"

    def forward(self, pixel_values: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        cosine = self.cosine(pixel_values, prompts)
        return {self.name: cosine, "pickscore_scaled": self.logit_scale_exp * cosine}
