"""Pre-norm transformer blocks: self-attention, cross-attention and a feed-forward network."""

from __future__ import annotations

import torch
from torch import nn

from .attention import MultiHeadAttention


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        hidden = int(dim * mlp_ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))


class TransformerBlock(nn.Module):
    """x + SelfAttn(LN(x)), then x + FFN(LN(x)). Returns (x, attention weights or None).

    `bias` [B, heads, N, N] is added to the attention scores and `relative` [B, N, N, relative_dim]
    to each pair's key and value (see MultiHeadAttention)."""

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 relative_dim: int = 0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, dropout, relative_dim)
        self.ffn = FeedForward(dim, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False,
                bias: torch.Tensor | None = None, relative: torch.Tensor | None = None):
        h = self.norm1(x)
        attended, weights = self.attn(h, h, h, mask, need_weights, bias=bias, relative=relative)
        x = x + attended
        return x + self.ffn(self.norm2(x)), weights


class CrossAttentionBlock(nn.Module):
    """One layer of a stream that reads another: self-attention, cross-attention, feed-forward.

    x [B, N, D] attends to context [B, M, D] (or [B_ctx, M, D] with context_index [B], see
    MultiHeadAttention); returns (x, self weights, cross weights), the weights None unless need_weights.
    `relative` [B, N, M, relative_dim]: features of each (x token, context token) pair for the
    cross-attention, `self_relative` [B, N, N, self_relative_dim] of each pair of x tokens for the
    self-attention (see MultiHeadAttention).
    """

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 relative_dim: int = 0, self_relative_dim: int = 0):
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_ctx, self.norm_ffn = (nn.LayerNorm(dim) for _ in range(4))
        self.self_attn = MultiHeadAttention(dim, heads, dropout, self_relative_dim)
        self.cross_attn = MultiHeadAttention(dim, heads, dropout, relative_dim)
        self.ffn = FeedForward(dim, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor,
                need_weights: bool = False, context_index: torch.Tensor | None = None,
                relative: torch.Tensor | None = None, self_relative: torch.Tensor | None = None):
        h = self.norm_self(x)
        attended, self_weights = self.self_attn(h, h, h, mask, need_weights, relative=self_relative)
        x = x + attended
        ctx = self.norm_ctx(context)
        attended, cross_weights = self.cross_attn(self.norm_cross(x), ctx, ctx, context_mask, need_weights,
                                                 context_index, relative=relative)
        x = x + attended
        return x + self.ffn(self.norm_ffn(x)), self_weights, cross_weights
