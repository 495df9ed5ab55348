"""Point-wise fusions of the pooled vectors: element-wise sum and element-wise (Hadamard) product.

SumFusion:     pooled = MLP(LN(W_v v + W_t t))
ProductFusion: pooled = MLP(tanh(W_v v) * tanh(W_t t))

v, t are the image and text pooled vectors. The product is the fusion of the VQA baseline
("deeper LSTM Q + norm I", Antol et al., "VQA: Visual Question Answering", ICCV 2015): both
modalities go through fc + tanh and are multiplied element by element; MCB (Fukui et al., EMNLP
2016) compares itself against exactly these element-wise sum and product baselines.

The sum is additive in the two modalities (the joint vector splits into f(v) + g(t)), so every
interaction has to come from the MLP after it; the product multiplies them, one multiplicative
interaction per dimension. Neither has attention, so neither returns weights.
"""

from __future__ import annotations

import torch
from torch import nn

from ..types import Features, FusionOutput


class SumFusion(nn.Module):
    token_layout = None  # pooled only: no token sequence
    accepts_image_index = False
    reads_text_embeddings = False
    accepts_graph = False

    def __init__(self, dim: int = 128, hidden: int = 512, dropout: float = 0.0):
        super().__init__()
        self.image_proj, self.text_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.LayerNorm(dim))

    def joint(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """W_v v + W_t t: the fused vector before normalisation and MLP."""
        return self.image_proj(v) + self.text_proj(t)

    def forward(self, image: Features, text: Features, need_weights: bool = False) -> FusionOutput:
        return FusionOutput(self.mlp(self.norm(self.joint(image.pooled, text.pooled))))


class ProductFusion(nn.Module):
    token_layout = None  # pooled only: no token sequence
    accepts_image_index = False
    reads_text_embeddings = False
    accepts_graph = False

    def __init__(self, dim: int = 128, hidden: int = 512, dropout: float = 0.0):
        super().__init__()
        self.image_proj, self.text_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.LayerNorm(dim))

    def joint(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """tanh(W_v v) * tanh(W_t t); tanh bounds each factor, so the product cannot blow up."""
        return torch.tanh(self.image_proj(v)) * torch.tanh(self.text_proj(t))

    def forward(self, image: Features, text: Features, need_weights: bool = False) -> FusionOutput:
        return FusionOutput(self.mlp(self.joint(image.pooled, text.pooled)))
