"""How every image token lies relative to every other: the pair features of relative attention.

Spatial questions ("the object closest to X", "is A closer to X than B is") are relations between
pairs of tokens. Relation-aware VQA models give attention the pair's geometry explicitly (ReGAT's
spatial relations, Li et al., ICCV 2019; relative position representations, Shaw et al., NAACL
2018) instead of leaving it to be rediscovered from absolute positions. Besides the offset and the
distance, each pair carries its distance rank (j is i's nearest, second nearest, ... and furthest,
second furthest, ...): "nearest" is then one comparison away rather than a sharp softmax over
distances that must be learnt.
"""

from __future__ import annotations

import torch


RANKS = 8  # distance-rank slots each way (past the 8th nearest / furthest, one shared slot)


def pair_features_dim(ranks: int = RANKS) -> int:
    return 4 + 2 * ranks


def pair_geometry(boxes: torch.Tensor, mask: torch.Tensor, ranks: int = RANKS) -> torch.Tensor:
    """Features [B, N, N, 4 + 2 * ranks] of token j seen from token i, from boxes [B, N, 4] in [0, 1].

    (dx, dy, distance, same token), then one-hot of j's rank among i's real neighbours by distance,
    nearest first (rank 0 is i itself), and by distance from the far end. Ranks past `ranks` share
    the last slot; padded tokens (mask False) get all-zero rank slots.
    """
    boxes = boxes.float()
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    offset = centre[:, None, :, :] - centre[:, :, None, :]  # [B, i, j, 2]
    distance = offset.norm(dim=-1)
    real = mask[:, None, :].expand_as(distance)
    near = _distance_ranks(distance.masked_fill(~real, float("inf")))
    far = (mask.sum(-1)[:, None, None] - 1 - near).clamp(min=0)
    slots = torch.arange(ranks, device=boxes.device)
    one_hot = [(rank.clamp(max=ranks - 1)[..., None] == slots) & real[..., None] for rank in (near, far)]
    same = torch.eye(mask.shape[1], device=boxes.device).expand_as(distance)
    return torch.cat([offset * 4, distance[..., None] * 4, same[..., None], *(h.float() for h in one_hot)], -1)


def seen_from(where: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """[B, P, K, F]: every image token's pair features seen from P places, each place a distribution
    `where` [B, P, K] over the K image tokens (a token at its box, or a word's attention):
    sum_i where[p, i] * pairs[i, j]."""
    return torch.einsum("bpi,bijf->bpjf", where, pairs)


def between(seen: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """[B, P, Q, F]: the geometry between every two places, from `seen` = seen_from(places p, pairs) and
    `where` [B, Q, K] of places q: sum_i sum_j where_p[i] * where_q[j] * pairs[i, j]."""
    return torch.einsum("bpjf,bqj->bpqf", seen, where)


def _distance_ranks(distance: torch.Tensor) -> torch.Tensor:
    """[B, i, j]: how many tokens k are nearer to i than j is (ties broken by index), counted by
    comparison rather than by sorting, so that the ONNX exporter, which has no stable sort, traces it."""
    d_ij, d_ik = distance[..., :, None], distance[..., None, :]
    index = torch.arange(distance.shape[-1], device=distance.device)
    earlier = index[None, :] < index[:, None]  # [j, k]: k before j
    return ((d_ik < d_ij) | ((d_ik == d_ij) & earlier)).sum(-1)
