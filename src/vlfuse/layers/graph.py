"""Graph layers: the built-in edges of a text-image graph and a relation-aware graph attention layer.

Edges carry a multi-hot set of types (the first channels of the edge features): SELF, SPATIAL
(image-image, by box centre), SEQUENCE (text-text, nearby words), CROSS (text-image, the most
similar pairs), then any relation types a caller adds; GEOMETRY (dx, dy, distance) are the last
channels, on spatial edges. Call the edge features e_ij.

GraphAttentionLayer is one round of multi-head graph attention (GAT, Velickovic et al., ICLR
2018) in pre-norm residual form, per head, over the neighbours N(i) only (a dense [B, N, N] mask):

  z_i    = W LN(h_i)
  g_ij   = LeakyReLU(a_dst . z_i + a_src . z_j) + b . e_ij + [cross edge] s_ij
  a_ij   = softmax_{j in N(i)} g_ij
  h_i   <- h_i + W_o concat_heads( sum_j a_ij (z_j + U e_ij) )
  h_i   <- h_i + FFN(LN(h_i))

b . e_ij (a score bias per edge type) and U e_ij (a message per edge type) make the attention
relation-aware: ReGAT (Li et al., "Relation-Aware Graph Attention Network for Visual Question
Answering", ICCV 2019) biases its attention by the relation label, and Shaw et al. (NAACL 2018)
add relation vectors to the attended values. GAT's own score ranks a node's neighbours the same
way for every reader ("static" attention, Brody et al., ICLR 2022); the edge terms and the
similarity s_ij depend on the pair, which is what lets a word pick out the object it names.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import FeedForward

SELF, SPATIAL, SEQUENCE, CROSS = range(4)  # built-in edge types, the first channels of the edge features
BUILTIN_TYPES = 4
GEOMETRY = 3  # dx, dy, distance: the last channels, on spatial edges


def build_edges(text_mask: torch.Tensor, image_mask: torch.Tensor, boxes: torch.Tensor | None,
                similarity: torch.Tensor, spatial_k: int, text_window: int, cross_k: int) -> torch.Tensor:
    """Built-in edges, bool [B, N, N, 4] over the N = Nt + Nv nodes: [b, i, j, t] = node i reads node
    j through type t (SELF, SPATIAL, SEQUENCE, CROSS). similarity: [B, Nt, Nv] word-image scores."""
    b, nt = text_mask.shape
    nv = image_mask.shape[1]
    device = text_mask.device
    text_pairs = text_mask[:, :, None] & text_mask[:, None, :]
    image_pairs = image_mask[:, :, None] & image_mask[:, None, :]
    eye_v = torch.eye(nv, dtype=torch.bool, device=device)
    if boxes is None or spatial_k >= nv - 1:
        spatial = image_pairs & ~eye_v
    else:
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2
        dist = (centre[:, :, None] - centre[:, None]).norm(dim=-1).masked_fill(~image_pairs | eye_v, math.inf)
        nearest = dist.topk(spatial_k, -1, largest=False).indices
        # fewer real neighbours than k: the extra picks are at infinite distance and dropped
        spatial = torch.zeros_like(image_pairs).scatter_(-1, nearest, True) & dist.isfinite()
        spatial = spatial | spatial.transpose(1, 2)
    offset = torch.arange(nt, device=device)
    offset = (offset[:, None] - offset[None, :]).abs()
    sequence = text_pairs & (offset > 0) & (offset <= text_window)
    scores = similarity.detach().masked_fill(~image_mask[:, None, :], -math.inf)
    picked = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, scores.topk(min(cross_k, nv), -1).indices, True)
    cross = picked & text_mask[:, :, None] & image_mask[:, None, :]

    n = nt + nv
    edges = torch.zeros(b, n, n, BUILTIN_TYPES, dtype=torch.bool, device=device)
    edges[..., SELF] = torch.eye(n, dtype=torch.bool, device=device) & torch.cat([text_mask, image_mask], 1)[:, :, None]
    edges[:, nt:, nt:, SPATIAL] = spatial
    edges[:, :nt, :nt, SEQUENCE] = sequence
    edges[:, :nt, nt:, CROSS] = cross
    edges[:, nt:, :nt, CROSS] = cross.transpose(1, 2)
    return edges


class GraphAttentionLayer(nn.Module):
    """One relation-aware GAT round (formulas in the module docstring). Returns (h, weights [B, H, N, N])."""

    def __init__(self, dim: int, heads: int, edge_features: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.att_dst = nn.Parameter(nn.init.xavier_uniform_(torch.empty(heads, dim // heads)))
        self.att_src = nn.Parameter(nn.init.xavier_uniform_(torch.empty(heads, dim // heads)))
        # edge terms start at zero: the layer begins as plain GAT and learns what each relation adds
        self.edge_bias = nn.Parameter(torch.zeros(edge_features, heads))
        self.edge_value = nn.Parameter(torch.zeros(edge_features, heads, dim // heads))
        self.out = nn.Linear(dim, dim)
        self.ffn = FeedForward(dim, mlp_ratio, dropout)

    def forward(self, h: torch.Tensor, edges: torch.Tensor, allowed: torch.Tensor, bias: torch.Tensor):
        """h [B, N, D]; edges [B, N, N, F] edge features; allowed [B, N, N] bool; bias [B, N, N]."""
        b, n, d = h.shape
        z = self.proj(self.norm1(h)).view(b, n, self.heads, -1).transpose(1, 2)  # [B, H, N, dh]
        dst, src = (z * self.att_dst[:, None]).sum(-1), (z * self.att_src[:, None]).sum(-1)  # [B, H, N]
        scores = F.leaky_relu(dst[..., :, None] + src[..., None, :], 0.2)
        scores = scores + (edges @ self.edge_bias).permute(0, 3, 1, 2) + bias[:, None]
        weights = scores.masked_fill(~allowed[:, None], -math.inf).softmax(-1)
        attended = F.dropout(weights, self.dropout, self.training)
        # sum_j a_ij U e_ij, summed per edge feature first so no [B, N, N, D] tensor is made
        per_feature = torch.einsum("bhij,bijf->bhif", attended, edges)
        messages = attended @ z + torch.einsum("bhif,fhd->bhid", per_feature, self.edge_value)
        h = h + self.out(messages.transpose(1, 2).reshape(b, n, d))
        return h + self.ffn(self.norm2(h)), weights
