"""Graph fusion: words and image tokens are the nodes of one graph, mixed by graph attention.

Nodes, in this order: the Nt text tokens, the Nv image tokens and, optionally, M external entity
nodes (an ExternalGraph), h_i^0 = x_i + T_{kind(i)} with a learned node-kind embedding T.
Node i reads node j when (i, j) is an edge; each edge carries a multi-hot set of types:

  self      every real node to itself;
  spatial   image-image: each image node to its `spatial_k` nearest by box centre, made symmetric;
            all real image nodes when no boxes are given or spatial_k >= Nv - 1;
  sequence  text-text: words at most `text_window` apart;
  cross     text-image: each word to its `cross_k` most similar image nodes under
            s_ij = (W_t t_i . W_v v_j) / sqrt(D), made symmetric (the image node also reads the word);
  relation  external edge (src, dst, r): dst reads src through type r, src reads dst through r^-1.

Padded nodes have no edges. Spatial edges also carry the geometry of the pair's box centres
(dx, dy, distance) as continuous edge features. Call the edge features e_ij.

Each of the `layers` rounds is a multi-head graph attention layer (GAT, Velickovic et al., ICLR
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

Readout, `readout: mean` (default): pooled = LN(W [mean of text nodes ; mean of image nodes]).
`readout: question`: the question asks which nodes matter, over every node (entities included):

  q = mean of text nodes,  a_j = softmax_j((W_q q) . (W_k h_j) / sqrt(D)),  r = sum_j a_j W_v h_j
  pooled = LN(W [q ; r])

(the attentional reduction of MCAN, Yu et al., CVPR 2019), so that a few relevant object or
entity nodes are not averaged away among the rest. tokens = the final node states, padded nodes
zeroed. With need_weights: "layer{i}.graph" [B, H, N, N] (rows of padded nodes are zero),
"adjacency" [B, N, N] (1 where node i reads node j) and, for the question readout, "readout"
[B, 1, N] (a_j), for plotting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.transformer import FeedForward
from ..types import Features, FusionOutput, masked_mean

SELF, SPATIAL, SEQUENCE, CROSS = range(4)  # built-in edge types, the first channels of the edge features
BUILTIN_TYPES = 4
GEOMETRY = 3  # dx, dy, distance: the last channels, on spatial edges


@dataclass
class ExternalGraph:
    """Extra nodes and labelled edges joined to the fusion graph: a scene graph (objects, their
    attributes and relations) or a knowledge graph, supplied per text row by the data side.

    edges: [B, E, 3] long (src, dst, relation): indices into the joint node list [text tokens
        (0 .. Nt-1), image tokens (Nt .. Nt+Nv-1), entity nodes (Nt+Nv ..)], with Nt, Nv the padded
        lengths of the batch; relation in [0, relations). dst reads src, src reads dst (inverse).
    edge_mask: [B, E] bool, True on real edges (lists padded to the batch's longest); None = all real.
    nodes: [B, M, D] entity features (e.g. attribute or entity names embedded by the text encoder),
        or None when the edges only join existing nodes (relations between detected objects).
    node_mask: [B, M] bool, True on real entities; None = all real.
    An edge touching a padded node is dropped.
    """

    edges: torch.Tensor
    edge_mask: torch.Tensor | None = None
    nodes: torch.Tensor | None = None
    node_mask: torch.Tensor | None = None


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


class GraphFusion(nn.Module):
    """forward(image, text, need_weights=False, graph: ExternalGraph | None = None) -> FusionOutput.

    tokens: node states [B, Nt + Nv (+ M), D] in node order; see the module docstring.
    """

    token_layout = ("text", "image")  # the words, then the image tokens
    accepts_image_index = False
    reads_text_embeddings = False
    accepts_graph = True  # forward(..., graph=ExternalGraph)

    def __init__(self, dim: int = 128, layers: int = 2, heads: int = 4, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, spatial_k: int = 4, text_window: int = 1, cross_k: int = 3,
                 relations: int = 16, readout: Literal["mean", "question"] = "mean"):
        super().__init__()
        if readout not in ("mean", "question"):
            raise ValueError(f"readout must be 'mean' or 'question', got {readout!r}")
        self.spatial_k, self.text_window, self.cross_k, self.relations = spatial_k, text_window, cross_k, relations
        self.edge_features = BUILTIN_TYPES + 2 * relations + GEOMETRY
        self.node_kind = nn.Embedding(3, dim)  # text, image, external entity
        self.text_proj, self.image_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.layers = nn.ModuleList(GraphAttentionLayer(dim, heads, self.edge_features, mlp_ratio, dropout)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.pool = nn.Sequential(nn.Linear(2 * dim, dim), nn.LayerNorm(dim))
        self.readout = nn.ModuleDict({"query": nn.Linear(dim, dim), "key": nn.Linear(dim, dim),
                                      "value": nn.Linear(dim, dim)}) if readout == "question" else None

    def forward(self, image: Features, text: Features, need_weights: bool = False,
                graph: ExternalGraph | None = None) -> FusionOutput:
        b, nt, d = text.tokens.shape
        nv = image.tokens.shape[1]
        similarity = self.text_proj(text.tokens) @ self.image_proj(image.tokens).transpose(1, 2) / math.sqrt(d)
        builtin = build_edges(text.mask, image.mask, image.boxes, similarity, self.spatial_k, self.text_window,
                              self.cross_k)
        nodes = [text.tokens + self.node_kind.weight[0], image.tokens + self.node_kind.weight[1]]
        masks = [text.mask, image.mask]
        if graph is not None and graph.nodes is not None:
            nodes.append(graph.nodes + self.node_kind.weight[2])
            masks.append(graph.nodes.new_ones(graph.nodes.shape[:2], dtype=torch.bool)
                         if graph.node_mask is None else graph.node_mask.bool())
        h, node_mask = torch.cat(nodes, 1), torch.cat(masks, 1)
        n = h.shape[1]

        edges = h.new_zeros(b, n, n, self.edge_features)
        edges[:, :nt + nv, :nt + nv, :BUILTIN_TYPES] = builtin.to(h.dtype)
        edges[..., SELF] = (torch.eye(n, dtype=torch.bool, device=h.device) & node_mask[:, :, None]).to(h.dtype)
        if graph is not None:
            self._add_relations(edges, graph, node_mask)
        if image.boxes is not None:
            centre = (image.boxes[..., :2] + image.boxes[..., 2:]).to(h.dtype) / 2
            delta = centre[:, None] - centre[:, :, None]  # [b, i, j] = centre_j - centre_i
            geometry = torch.cat([delta, delta.norm(dim=-1, keepdim=True)], -1)
            edges[:, nt:nt + nv, nt:nt + nv, -GEOMETRY:] = geometry * builtin[:, nt:, nt:, SPATIAL, None]
        adjacency = edges[..., :-GEOMETRY].gt(0).any(-1)
        # padded nodes read only themselves: their rows stay finite and no real node reads them
        allowed = adjacency | (torch.eye(n, dtype=torch.bool, device=h.device) & ~node_mask[:, :, None])
        bias = h.new_zeros(b, n, n)
        bias[:, :nt, nt:nt + nv] = similarity
        bias[:, nt:nt + nv, :nt] = similarity.transpose(1, 2)
        bias = bias * edges[..., CROSS]

        attentions = {}
        for i, layer in enumerate(self.layers):
            h, weights = layer(h, edges, allowed, bias)
            if need_weights:
                attentions[f"layer{i}.graph"] = weights * node_mask[:, None, :, None]
        if need_weights:
            attentions["adjacency"] = adjacency.to(h.dtype)
        h = self.norm(h) * node_mask[..., None]
        text_mean = masked_mean(h[:, :nt], text.mask)
        if self.readout is None:
            summary = masked_mean(h[:, nt:nt + nv], image.mask)
        else:
            summary, weights = self._question_readout(text_mean, h, node_mask)
            if need_weights:
                attentions["readout"] = weights[:, None]
        pooled = self.pool(torch.cat([text_mean, summary], -1))
        return FusionOutput(pooled, h, attentions)

    def _question_readout(self, query: torch.Tensor, h: torch.Tensor, node_mask: torch.Tensor):
        """(sum_j a_j W_v h_j [B, D], a [B, N]): the question's attention over the real nodes."""
        scores = (self.readout["key"](h) @ self.readout["query"](query)[..., None]).squeeze(-1) / math.sqrt(h.shape[-1])
        weights = scores.masked_fill(~node_mask, -math.inf).softmax(-1)
        return (weights[..., None] * self.readout["value"](h)).sum(1), weights

    def _add_relations(self, edges: torch.Tensor, graph: ExternalGraph, node_mask: torch.Tensor) -> None:
        """Set the relation channels of `edges` in place: forward at [dst, src], inverse at [src, dst]."""
        src, dst, rel = graph.edges.long().unbind(-1)
        valid = torch.ones_like(src, dtype=torch.bool) if graph.edge_mask is None else graph.edge_mask.bool()
        n = node_mask.shape[1]
        out_of_range = valid & ((src < 0) | (src >= n) | (dst < 0) | (dst >= n) | (rel < 0) | (rel >= self.relations))
        if out_of_range.any():
            raise ValueError(f"external graph: an edge's node is outside 0..{n - 1} or its relation outside "
                             f"0..{self.relations - 1} (set `relations` to the relation vocabulary size)")
        src, dst, rel = (x.masked_fill(~valid, 0) for x in (src, dst, rel))
        valid = valid & node_mask.gather(1, src) & node_mask.gather(1, dst)
        batch = torch.arange(src.shape[0], device=src.device)[:, None].expand_as(src)
        b, s, t, r = batch[valid], src[valid], dst[valid], rel[valid]
        edges[b, t, s, BUILTIN_TYPES + r] = 1
        edges[b, s, t, BUILTIN_TYPES + self.relations + r] = 1
