"""The two contracts every encoder and fusion module speaks (see DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

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
