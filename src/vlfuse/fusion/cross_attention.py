"""Transformer fusions in which one stream reads the other.

CrossAttentionFusion: text queries image, h = h_t + Attn(LN(h_t), LN(h_v), LN(h_v)) per layer, with
self-attention and a feed-forward network (pre-norm form of the LXMERT / ViLBERT layer).
CoAttentionFusion: two streams exchange information in every layer, each stream's queries attending
to the other stream's previous states (ViLBERT co-attention, Lu et al., NeurIPS 2019).
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.geometry import between, pair_features_dim, pair_geometry, seen_from
from ..layers.transformer import CrossAttentionBlock
from ..types import Features, FusionOutput, masked_mean


class CrossAttentionFusion(nn.Module):
    """Geometry seen from where each word looked (needs image boxes, from regions or a grid; without
    them the layers read plainly). After each layer, a word's focus is its attention over the image
    tokens (mean over heads), and the pair features of vlfuse.layers.geometry are read from there:

    - `anchored_geometry`: in the next layer's cross-attention, each image token's key and value also
      carry its geometry seen from the word's focus, Σ_i α(word → i) · pairs(i, j). "The object
      closest to the red one" is then two steps: find the red object, then read its nearest token.
    - `word_geometry`: in the next layer's self-attention, each pair of words carries the geometry
      between their foci, Σ_i Σ_j α(t → i) α(s → j) · pairs(i, j). "How many objects are closer to
      the red one than the blue one is" is then one step once both colours are found: the word "red"
      reads the word "blue" and with it the blue object's distance rank seen from the red object.
    """

    token_layout = ("text",)  # the words, each having read the image
    accepts_image_index = True  # the image stream is read-only: its keys and values are computed once per image
    reads_text_embeddings = False
    accepts_graph = False

    def __init__(self, dim: int = 128, layers: int = 2, heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 anchored_geometry: bool = False, word_geometry: bool = False):
        super().__init__()
        self.anchored_geometry, self.word_geometry = anchored_geometry, word_geometry
        pair_dim = pair_features_dim()
        self.blocks = nn.ModuleList(
            CrossAttentionBlock(dim, heads, mlp_ratio, dropout, relative_dim=pair_dim if i and anchored_geometry else 0,
                                self_relative_dim=pair_dim if i and word_geometry else 0)
            for i in range(layers))  # the first layer has no focus to start from
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: Features, text: Features, need_weights: bool = False,
                image_index: torch.Tensor | None = None) -> FusionOutput:
        """With image_index [B_text], `image` holds one row per image, read by text row i at image_index[i]."""
        x, attentions = text.tokens, {}
        to_image = between_words = None  # the geometry from each word's previous focus
        pairs = self._pairs(image, image_index)
        for i, block in enumerate(self.blocks):
            x, self_w, cross_w = block(x, text.mask, image.tokens, image.mask, need_weights or pairs is not None,
                                       image_index, relative=to_image, self_relative=between_words)
            if pairs is not None:  # the next layer sees the image from where this one looked
                focus = cross_w.float().mean(1)  # [B, T, K]
                seen = seen_from(focus, pairs)  # image token j from word t's focus
                to_image = seen if self.anchored_geometry else None
                between_words = between(seen, focus) if self.word_geometry else None
            if need_weights:
                attentions[f"layer{i}.text_self"] = self_w
                attentions[f"layer{i}.text_to_image"] = cross_w
        x = self.norm(x)
        return FusionOutput(masked_mean(x, text.mask), x, attentions)

    def _pairs(self, image: Features, image_index: torch.Tensor | None) -> torch.Tensor | None:
        """Pair features [B_text, K, K, F] of the image each text row reads, or None."""
        geometry = self.anchored_geometry or self.word_geometry
        if not geometry or image.boxes is None or len(self.blocks) < 2:
            return None
        pairs = pair_geometry(image.boxes, image.mask)
        return pairs if image_index is None else pairs.index_select(0, image_index)


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
