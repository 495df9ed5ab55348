"""Late fusion: each modality predicts on its own, and the predictions are combined.

z_v = MLP_v(v), z_t = MLP_t(t)  (per-modality vectors in the space the head reads)
pooled = sum_i w_i z_i   with w = softmax(a), a learned  ("weighted")
         (z_v + z_t) / 2                                 ("mean")
         max(z_v, z_t) element-wise                      ("max")

With a linear head (ClassifierHead with hidden=0), head(sum_i w_i z_i) = sum_i w_i head(z_i) because
the weights sum to 1 (the bias carries through), so "weighted" and "mean" are exactly a weighted sum
(average) of per-modality logits: classic late fusion / prediction averaging (e.g. Snoek et al.,
"Early versus Late Fusion in Semantic Video Analysis", ACM MM 2005). "max" is not linear, so it
has no such reading.

No modality sees the other before the combination, so late fusion cannot answer a question whose
answer depends on image and text jointly; it is the lower bound that shows how much interaction
the other fusions buy.

need_weights returns attentions["modality_weights"] [B, 2] (image, text): w for "weighted" and
"mean"; for "max", the share of dimensions each modality won.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..types import Features, FusionOutput

COMBINES = ("weighted", "mean", "max")


class LateFusion(nn.Module):
    token_layout = None  # pooled only: no token sequence
    accepts_image_index = False
    reads_text_embeddings = False
    accepts_graph = False

    def __init__(self, dim: int = 128, hidden: int = 512, dropout: float = 0.0,
                 combine: Literal["weighted", "mean", "max"] = "weighted"):
        super().__init__()
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {', '.join(COMBINES)}, got {combine!r}")
        self.combine = combine
        self.image_mlp, self.text_mlp = (
            nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                          nn.LayerNorm(dim)) for _ in range(2))
        # only "weighted" learns weights; a parameter the other modes never use would be dead
        self.modality_logits = nn.Parameter(torch.zeros(2)) if combine == "weighted" else None

    def per_modality(self, image: Features, text: Features) -> torch.Tensor:
        """[B, 2, D]: the image's and the text's own prediction-space vectors."""
        return torch.stack([self.image_mlp(image.pooled), self.text_mlp(text.pooled)], 1)

    def forward(self, image: Features, text: Features, need_weights: bool = False) -> FusionOutput:
        z = self.per_modality(image, text)
        if self.combine == "max":
            pooled, winner = z.max(1)
            weights = F.one_hot(winner, 2).to(z.dtype).mean(1) if need_weights else None
        else:
            w = self.modality_logits.softmax(0) if self.combine == "weighted" else z.new_full((2,), 0.5)
            pooled = (w[None, :, None] * z).sum(1)
            weights = w.expand(z.shape[0], 2)
        return FusionOutput(pooled, None, {"modality_weights": weights} if need_weights else {})
