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

Each of the `layers` rounds is a relation-aware graph attention layer (GAT; vlfuse.layers.graph,
where its formulas are) over the neighbours only.

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
from typing import Literal

import torch
from torch import nn

from ..layers.graph import BUILTIN_TYPES, CROSS, GEOMETRY, SELF, SPATIAL, GraphAttentionLayer, build_edges
from ..types import ExternalGraph, Features, FusionOutput, masked_mean


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
