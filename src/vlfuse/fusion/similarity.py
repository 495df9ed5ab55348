"""Attention fusion over the image-text similarity matrix (bidirectional, SCAN-style).

S = (W_t T)(W_v V)^T / sqrt(d) over text tokens T [Nt, d] and image tokens V [Nv, d].
Text-to-image: each word attends over regions, a_t = softmax_rows(S) V; image-to-text: each region
attends over words, a_v = softmax_rows(S^T) T (Lee et al., "Stacked Cross Attention", ECCV 2018).
Each side is combined with what it attended to, mean-pooled over its real tokens, and the two are
merged by an MLP.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..types import Features, FusionOutput, masked_mean


class SimilarityAttentionFusion(nn.Module):
    token_layout = ("text", "image")  # the words, then the image tokens
    accepts_image_index = False
    reads_text_embeddings = False
    accepts_graph = False

    def __init__(self, dim: int = 128, hidden: int = 512, dropout: float = 0.0):
        super().__init__()
        self.text_proj, self.image_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.text_combine = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU())
        self.image_combine = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU())
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.LayerNorm(dim))

    def forward(self, image: Features, text: Features, need_weights: bool = False) -> FusionOutput:
        t, v = text.tokens, image.tokens
        sim = self.text_proj(t) @ self.image_proj(v).transpose(1, 2) / math.sqrt(t.shape[-1])  # [B, Nt, Nv]
        text_to_image = sim.masked_fill(~image.mask[:, None, :], float("-inf")).softmax(-1)
        image_to_text = sim.transpose(1, 2).masked_fill(~text.mask[:, None, :], float("-inf")).softmax(-1)
        text_side = self.text_combine(torch.cat([t, text_to_image @ v], -1))
        image_side = self.image_combine(torch.cat([v, image_to_text @ t], -1))
        pooled = self.mlp(torch.cat([masked_mean(text_side, text.mask), masked_mean(image_side, image.mask)], -1))
        attentions = {"text_to_image": text_to_image, "image_to_text": image_to_text} if need_weights else {}
        return FusionOutput(pooled, torch.cat([text_side, image_side], 1), attentions)
