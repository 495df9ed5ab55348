"""Early concatenation: the baseline every fusion paper compares against (the RN paper's CNN+MLP)."""

from __future__ import annotations

import torch
from torch import nn

from ..types import Features, FusionOutput


class ConcatFusion(nn.Module):
    """pooled = MLP([v_pooled ; t_pooled]). No attention, so no weights to return."""

    token_layout = None  # pooled only: no token sequence
    accepts_image_index = False
    reads_text_embeddings = False
    accepts_graph = False

    def __init__(self, dim: int = 128, hidden: int = 512, dropout: float = 0.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.LayerNorm(dim))

    def forward(self, image: Features, text: Features, need_weights: bool = False) -> FusionOutput:
        return FusionOutput(self.mlp(torch.cat([image.pooled, text.pooled], -1)))
