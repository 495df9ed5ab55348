"""The contracts every encoder and fusion module speaks (see docs/design.md): Features, FusionOutput, Fusion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch


@dataclass
class Features:
    """What every encoder returns.

    tokens: [B, N, D]; mask: [B, N] bool, True where the token is real; pooled: [B, D].
    boxes: [B, N, 4] (x0, y0, x1, y1) in [0, 1], where each image token lies (a grid cell, a
    region); None for text and for encoders without a spatial layout. Fusions that need geometry
    (graph adjacency, box embeddings) read it.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    boxes: torch.Tensor | None = None

    def index_select(self, index: torch.Tensor) -> "Features":
        """Rows `index` of the batch: lets one image's features serve all of its questions."""
        boxes = None if self.boxes is None else self.boxes.index_select(0, index)
        return Features(self.tokens.index_select(0, index), self.mask.index_select(0, index),
                        self.pooled.index_select(0, index), boxes)


@dataclass
class FusionOutput:
    """What every fusion module returns.

    pooled: [B, D]; tokens: [B, N', D] or None; attentions: named weight tensors, filled only
    when the caller asked for them (need_weights=True).
    """

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    attentions: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class ExternalGraph:
    """Extra nodes and labelled edges joined to a graph fusion's graph: a scene graph (objects, their
    attributes and relations) or a knowledge graph, supplied per text row by the data side
    (models/scene_graph_input.py builds one from scene graphs); a fusion that reads it says
    accepts_graph and takes it as forward(..., graph=...) (fusion/graph.py).

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


# The parts of a fused token sequence: "cls" and "sep" are one token each, "text" the Nt words and
# "image" the Nv image tokens of the fusion's inputs.
TokenPart = Literal["cls", "sep", "text", "image"]


@runtime_checkable
class Fusion(Protocol):
    """What every fusion module is, and what it says about itself so that nothing else keeps a table
    of fusions: the model, pre-training, explain and the scene-graph input read these attributes.

    token_layout: the order of the parts in FusionOutput.tokens (and in a joint attention's rows),
        e.g. ("cls", "text", "image") for a single stream; anything a fusion appends after them
        (graph entity nodes) is its own; None when the fusion returns no tokens (pooled only).
    accepts_image_index: forward takes `image_index` [B_text] and reads each image's row once for
        all of its questions (else the model repeats the image rows per question).
    reads_text_embeddings: it runs a pretrained text model itself over the text's input embeddings
        (pairs with a text encoder set to embeddings_only), rather than reading encoded text.
    accepts_graph: forward takes `graph` (an ExternalGraph: entity nodes and labelled edges).
    """

    token_layout: tuple[TokenPart, ...] | None
    accepts_image_index: bool
    reads_text_embeddings: bool
    accepts_graph: bool

    def forward(self, image: Features, text: Features, need_weights: bool = False, **inputs: Any) -> FusionOutput:
        ...


# What a fusion that does not describe itself (one built by hand) is taken to be.
FUSION_DEFAULTS: dict[str, Any] = {"token_layout": None, "accepts_image_index": False,
                                   "reads_text_embeddings": False, "accepts_graph": False}


def fusion_trait(fusion: object, name: str) -> Any:
    """One of the Fusion attributes of `fusion` (a module or its class), its default when it does not say."""
    return getattr(fusion, name, FUSION_DEFAULTS[name])


def token_spans(layout: tuple[TokenPart, ...], nt: int, nv: int) -> dict[str, slice]:
    """Where each part of a token layout lies for nt words and nv image tokens."""
    sizes = {"cls": 1, "sep": 1, "text": nt, "image": nv}
    spans, start = {}, 0
    for part in layout:
        spans.setdefault(part, slice(start, start + sizes[part]))
        start += sizes[part]
    return spans


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens only, so padding never changes the result."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def grid_boxes(rows: int, cols: int, batch: int, device: torch.device | None = None) -> torch.Tensor:
    """Boxes [batch, rows * cols, 4] of a row-major grid of cells over the unit square."""
    y0 = torch.arange(rows, device=device, dtype=torch.float32).repeat_interleave(cols) / rows
    x0 = torch.arange(cols, device=device, dtype=torch.float32).repeat(rows) / cols
    boxes = torch.stack([x0, y0, x0 + 1 / cols, y0 + 1 / rows], -1)
    return boxes.expand(batch, -1, -1)
