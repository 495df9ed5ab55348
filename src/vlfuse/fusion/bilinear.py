"""Bilinear fusions of the pooled vectors: the full outer product and its low-rank factorisation.

OuterProductFusion: p = W_v v, q = W_t t (both rank_dim wide), pooled = MLP(vec(p ⊗ q)).
Every image feature multiplies every text feature (full bilinear pooling; the Tensor Fusion
Network, Zadeh et al., EMNLP 2017; MCB, Fukui et al., EMNLP 2016, approximates the same outer
product with Count Sketch). The outer product has rank_dim^2 entries, so v and t are first
projected to a small rank_dim (16-32): at rank_dim = 16 that is 256 features, at the model width
128 it would be 16384. The projections' biases play the role of TFN's appended constant 1:
(W_v v + b_v) ⊗ (W_t t + b_t) also holds the unimodal terms (W_v v) ⊗ b_t and b_v ⊗ (W_t t).

LowRankBilinearFusion: MFB (Yu et al., "Multi-modal Factorized Bilinear Pooling with
Co-Attention Learning for VQA", ICCV 2017). Each of the out_dim outputs is a bilinear form
v^T W_o t with W_o of rank `factors` (k), written as
    z = SumPool_k(U^T v ∘ V^T t),   U, V: [dim, out_dim * k]
    z <- sign(z) sqrt(|z|)          (power normalisation)
    z <- z / ||z||_2                (L2 normalisation)
and pooled = LN(W_o z) maps z back to the model width. k = 1 is the low-rank bilinear form of MLB
(Kim et al., "Hadamard Product for Low-rank Bilinear Pooling", ICLR 2017), which additionally puts
tanh on the projections and has no normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..types import Features, FusionOutput

# sqrt(|z| + eps) - sqrt(eps) instead of sqrt(|z|): within 1e-4 of it, but with a finite gradient at z = 0
# (exact zeros do occur, e.g. with dropout and k = 1), where sqrt's is infinite and autograd gives NaN.
SQRT_EPS = 1e-8


def signed_sqrt(z: torch.Tensor) -> torch.Tensor:
    """sign(z) sqrt(|z|), with a finite gradient at 0."""
    return torch.sign(z) * (torch.sqrt(z.abs() + SQRT_EPS) - SQRT_EPS ** 0.5)


class OuterProductFusion(nn.Module):
    token_layout = None  # pooled only: no token sequence
    accepts_image_index = False
    reads_text_embeddings = False
    accepts_graph = False

    def __init__(self, dim: int = 128, rank_dim: int = 16, hidden: int = 512, dropout: float = 0.0):
        super().__init__()
        self.image_proj, self.text_proj = nn.Linear(dim, rank_dim), nn.Linear(dim, rank_dim)
        self.mlp = nn.Sequential(nn.Linear(rank_dim * rank_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.LayerNorm(dim))

    def joint(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """vec(W_v v ⊗ W_t t): [B, rank_dim^2], row-major (entry i * rank_dim + j is p_i q_j)."""
        p, q = self.image_proj(v), self.text_proj(t)
        return (p.unsqueeze(-1) * q.unsqueeze(-2)).flatten(1)

    def forward(self, image: Features, text: Features, need_weights: bool = False) -> FusionOutput:
        return FusionOutput(self.mlp(self.joint(image.pooled, text.pooled)))


class LowRankBilinearFusion(nn.Module):
    token_layout = None  # pooled only: no token sequence
    accepts_image_index = False
    reads_text_embeddings = False
    accepts_graph = False

    def __init__(self, dim: int = 128, factors: int = 5, out_dim: int = 256, dropout: float = 0.0):
        super().__init__()
        self.factors, self.out_dim = factors, out_dim
        self.image_proj = nn.Linear(dim, out_dim * factors)
        self.text_proj = nn.Linear(dim, out_dim * factors)
        self.dropout = nn.Dropout(dropout)  # where MFB puts it: on the expanded product, before sum pooling
        self.out = nn.Sequential(nn.Linear(out_dim, dim), nn.LayerNorm(dim))

    def joint(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z [B, out_dim]: sum-pooled over the k factors, power- and L2-normalised (unit norm)."""
        expanded = self.dropout(self.image_proj(v) * self.text_proj(t))
        z = expanded.view(-1, self.out_dim, self.factors).sum(-1)
        return F.normalize(signed_sqrt(z), dim=-1)

    def forward(self, image: Features, text: Features, need_weights: bool = False) -> FusionOutput:
        return FusionOutput(self.out(self.joint(image.pooled, text.pooled)))
