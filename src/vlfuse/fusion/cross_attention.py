"""Transformer fusions in which one stream reads the other.

CrossAttentionFusion: text queries image, h = h_t + Attn(LN(h_t), LN(h_v), LN(h_v)) per layer, with
self-attention and a feed-forward network (pre-norm form of the LXMERT / ViLBERT layer).
CoAttentionFusion: two streams exchange information in every layer, each stream's queries attending
to the other stream's previous states (ViLBERT co-attention, Lu et al., NeurIPS 2019).
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.transformer import CrossAttentionBlock
from ..types import Features, FusionOutput, masked_mean


class CrossAttentionFusion(nn.Module):
    token_layout = ("text",)  # the words, each having read the image
    accepts_image_index = True  # the image stream is read-only: its keys and values are computed once per image
    reads_text_embeddings = False
    accepts_graph = False

    def __init__(self, dim: int = 128, layers: int = 2, heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim, heads, mlp_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: Features, text: Features, need_weights: bool = False,
                image_index: torch.Tensor | None = None) -> FusionOutput:
        """With image_index [B_text], `image` holds one row per image, read by text row i at image_index[i]."""
        x, attentions = text.tokens, {}
        for i, block in enumerate(self.blocks):
            x, self_w, cross_w = block(x, text.mask, image.tokens, image.mask, need_weights, image_index)
            if need_weights:
                attentions[f"layer{i}.text_self"] = self_w
                attentions[f"layer{i}.text_to_image"] = cross_w
        x = self.norm(x)
        return FusionOutput(masked_mean(x, text.mask), x, attentions)


class CoAttentionFusion(nn.Module):
    token_layout = ("text", "image")  # the words, then the image tokens
    accepts_image_index = False
    reads_text_embeddings = False
    accepts_graph = False

    def __init__(self, dim: int = 128, layers: int = 2, heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.text_blocks = nn.ModuleList(CrossAttentionBlock(dim, heads, mlp_ratio, dropout) for _ in range(layers))
        self.image_blocks = nn.ModuleList(CrossAttentionBlock(dim, heads, mlp_ratio, dropout) for _ in range(layers))
        self.text_norm, self.image_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.pool = nn.Sequential(nn.Linear(2 * dim, dim), nn.LayerNorm(dim))

    def forward(self, image: Features, text: Features, need_weights: bool = False) -> FusionOutput:
        t, v, attentions = text.tokens, image.tokens, {}
        for i, (text_block, image_block) in enumerate(zip(self.text_blocks, self.image_blocks)):
            t_new, t_self, t_cross = text_block(t, text.mask, v, image.mask, need_weights)
            v, v_self, v_cross = image_block(v, image.mask, t, text.mask, need_weights)
            t = t_new
            if need_weights:
                attentions.update({f"layer{i}.text_self": t_self, f"layer{i}.text_to_image": t_cross,
                                   f"layer{i}.image_self": v_self, f"layer{i}.image_to_text": v_cross})
        t, v = self.text_norm(t), self.image_norm(v)
        pooled = self.pool(torch.cat([masked_mean(t, text.mask), masked_mean(v, image.mask)], -1))
        return FusionOutput(pooled, torch.cat([t, v], 1), attentions)
