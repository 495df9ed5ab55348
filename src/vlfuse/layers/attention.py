"""Attention in its forms, with weights returned only on request.

Without weights, attention goes through `torch.nn.functional.scaled_dot_product_attention`, so the
fused kernels stay on the hot path; with weights, the same maths is spelled out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 key_mask: torch.Tensor | None = None, need_weights: bool = False,
                                 dropout_p: float = 0.0, bias: torch.Tensor | None = None
                                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q k^T / sqrt(d) + bias) v over [..., Nq, D] x [..., Nk, D].

    key_mask: [B, Nk] bool, True for real keys; padded keys get zero weight.
    bias: optional additive scores broadcastable to [..., Nq, Nk] (e.g. a spatial prior).
    Returns (output [..., Nq, D], weights [..., Nq, Nk] or None).
    """
    if key_mask is not None:
        # Broadcast [B, Nk] over heads and queries: [B, 1, 1, Nk] for 4-d inputs, [B, 1, Nk] for 3-d.
        shape = (key_mask.shape[0],) + (1,) * (q.dim() - 2) + (key_mask.shape[-1],)
        padding = torch.zeros(shape, dtype=q.dtype, device=q.device).masked_fill(~key_mask.view(shape), float("-inf"))
        bias = padding if bias is None else bias + padding
    if not need_weights and not _slow_fused_backward(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p), None
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    weights = scores.softmax(-1)
    return F.dropout(weights, dropout_p) @ v, weights


def _slow_fused_backward(q: torch.Tensor) -> bool:
    """PyTorch's fused CPU attention has a slow backward in bf16 / fp16 (in `python -m
    bench.profile_pair visualbert --bf16`, before this switch: 62 ms a step against 17 ms in fp32):
    train those with the plain matmuls."""
    return q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and q.requires_grad


class MultiHeadAttention(nn.Module):
    """Multi-head attention (Vaswani et al., 2017) with key-padding masks.

    forward(query [B, Nq, D], key [B, Nk, D], value [B, Nk, D], key_mask [B, Nk]) returns
    (output [B, Nq, D], weights [B, heads, Nq, Nk] or None).

    With `kv_index` [B], key and value hold fewer rows ([B_kv, Nk, D]) and query row i reads
    key/value row kv_index[i]: the projections run once per distinct row (e.g. once per image
    for all of its questions) instead of once per query row. `bias` [B, heads, Nq, Nk] is added
    to the scores.

    With `relative_dim` F > 0, forward takes `relative` [B, Nq, Nk, F], features of each
    (query, key) pair, added to that pair's key and value (relative position representations, Shaw et
    al., NAACL 2018): score = q.(k + W_k r) and output = sum w (v + W_v r), per head.
    """

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.0, relative_dim: int = 0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))
        if relative_dim:
            scale = relative_dim ** -0.5
            self.relative_k = nn.Parameter(torch.randn(relative_dim, heads, dim // heads) * scale)
            self.relative_v = nn.Parameter(torch.randn(relative_dim, heads, dim // heads) * scale)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_mask: torch.Tensor | None = None, need_weights: bool = False,
                kv_index: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                relative: torch.Tensor | None = None):
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(key)), self._split(self.v_proj(value))
        if kv_index is not None:
            k, v = k.index_select(0, kv_index), v.index_select(0, kv_index)
            key_mask = None if key_mask is None else key_mask.index_select(0, kv_index)
        dropout = self.dropout if self.training else 0.0
        if relative is None:
            out, weights = scaled_dot_product_attention(q, k, v, key_mask, need_weights, dropout, bias)
        else:
            out, weights = self._relative_attention(q, k, v, key_mask, dropout, bias, relative.to(q.dtype))
        out = out.transpose(1, 2).reshape(query.shape)
        return self.out_proj(out), weights

    def _relative_attention(self, q, k, v, key_mask, dropout, bias, relative):
        """Attention whose keys and values also carry the pair features; the pair terms are formed
        in the F-dim feature space (q projected down, weights summed over F) so that no
        [B, heads, Nq, Nk, head_dim] tensor is ever built. (The pair values are summed with the weights
        before attention dropout; the configs that use this train without it.)"""
        relative_k, relative_v = self.relative_k.to(q.dtype), self.relative_v.to(q.dtype)
        pair_scores = torch.einsum("bhqf,bqkf->bhqk", torch.einsum("bhqd,fhd->bhqf", q, relative_k), relative)
        bias = pair_scores / math.sqrt(q.shape[-1]) if bias is None else bias + pair_scores / math.sqrt(q.shape[-1])
        out, weights = scaled_dot_product_attention(q, k, v, key_mask, True, dropout, bias)
        pair_values = torch.einsum("bhqf,fhd->bhqd", torch.einsum("bhqk,bqkf->bhqf", weights, relative), relative_v)
        return out + pair_values, weights


class AdditiveAttention(nn.Module):
    """Additive attention (Bahdanau et al., 2015): score(q, k) = v^T tanh(W_q q + W_k k).

    forward(query [B, Nq, Dq] or [B, Dq], key [B, Nk, Dk], value [B, Nk, Dv], key_mask [B, Nk])
    returns (output [B, Nq, Dv], weights [B, Nq, Nk] or None); a 2-d query (one query per row,
    as in attention pooling) gives output [B, Dv] and weights [B, Nk]. Padded keys get zero weight.
    """

    def __init__(self, query_dim: int, key_dim: int | None = None, hidden: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        hidden = hidden or query_dim
        self.q_proj = nn.Linear(query_dim, hidden, bias=False)  # one bias, on the key side, is enough for the sum
        self.k_proj = nn.Linear(key_dim or query_dim, hidden)
        self.v = nn.Linear(hidden, 1, bias=False)
        self.dropout = dropout

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_mask: torch.Tensor | None = None, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        single = query.dim() == 2
        if single:
            query = query.unsqueeze(1)
        # [B, Nq, 1, H] + [B, 1, Nk, H]: every query meets every key (memory B * Nq * Nk * H).
        scores = self.v(torch.tanh(self.q_proj(query).unsqueeze(2) + self.k_proj(key).unsqueeze(1))).squeeze(-1)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask.bool().unsqueeze(1), float("-inf"))
        weights = scores.softmax(-1)
        out = F.dropout(weights, self.dropout, self.training) @ value
        if single:
            out, weights = out.squeeze(1), weights.squeeze(1)
        return out, (weights if need_weights else None)
