"""Token weights -> pixel heatmaps: each image token's weight is spread over its box.

Painting keeps mass: a token of weight w puts w / area on every pixel of its box (pixels cut by a
box edge get their covered fraction), and overlapping boxes add up. So the share of a map inside a
token's box is at least that token's share of the weight, whatever the box's size, and a map is a
distribution over pixels (it sums to 1) unless no token got any weight (then it is all zero).
"""

from __future__ import annotations

import torch


def _coverage(lo: torch.Tensor, hi: torch.Tensor, pixels: int) -> torch.Tensor:
    """[N, pixels]: the fraction of each pixel (along one axis) that lies in [lo, hi) (unit coordinates)."""
    edges = torch.arange(pixels, dtype=lo.dtype, device=lo.device) / pixels
    inside = torch.minimum(hi[:, None], edges + 1 / pixels) - torch.maximum(lo[:, None], edges)
    return inside.clamp_min(0) * pixels


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Each [H, W] map (the last two dims) scaled to sum to 1; all-zero maps stay zero."""
    total = maps.sum((-2, -1), keepdim=True)
    return torch.where(total > 0, maps / total.clamp_min(1e-30), maps)


def paint(weights: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int],
          mask: torch.Tensor | None = None) -> torch.Tensor:
    """weights [..., N] on tokens with boxes [N, 4] (x0, y0, x1, y1 in [0, 1]) -> maps [..., H, W].

    mask [N] (True = real token) zeroes padded tokens. Any leading dims (layers, heads, words) are kept,
    so one call paints every per-layer, per-head and per-word map; each map is normalised on its own.
    """
    height, width = size
    boxes = boxes.to(torch.float64)
    columns = _coverage(boxes[:, 0], boxes[:, 2], width)  # [N, W]
    rows = _coverage(boxes[:, 1], boxes[:, 3], height)  # [N, H]
    area = columns.sum(-1) * rows.sum(-1)  # in pixels
    density = weights.detach().to(torch.float64).clamp_min(0) / area.clamp_min(1e-12)
    density = torch.where(area > 0, density, torch.zeros_like(density))  # a box with no pixels paints nothing
    if mask is not None:
        density = density * mask.to(density.dtype)
    maps = torch.einsum("...n,nh,nw->...hw", density, rows, columns)
    return normalise(maps).to(torch.float32)
