"""Answer ranking for visual dialogue: MRR, R@K and mean rank (VisDial, Das et al. 2017).

Each question (a dialogue round) has C candidate answers (100 in VisDial) with model scores and
one ground-truth index. rank = 1-based position of the ground truth when candidates are sorted by
descending score; then, over the N questions:
    MRR = mean(1 / rank),  R@K = mean(rank <= K),  mean rank = mean(rank).
Ties count against the model: rank = #(candidates scoring >= the ground truth), so a model giving
every candidate the same score gets rank C, not 1. (VisDial's reference code sorts, breaking ties by
index order; the two agree when scores are distinct.)

Scores may carry leading dimensions, e.g. [dialogues, rounds, C] with gt_index [dialogues, rounds].
NDCG, which needs VisDial's dense relevance annotations, is not computed here.
"""

from __future__ import annotations

from typing import Sequence

import torch


def answer_ranks(scores, gt_index) -> torch.Tensor:
    """1-based rank of the ground-truth answer for every question, shape of gt_index."""
    scores, gt = torch.as_tensor(scores), torch.as_tensor(gt_index)
    if scores.ndim < 1 or scores.shape[:-1] != gt.shape:
        raise ValueError(f"scores [..., candidates] must match gt_index [...]: got {tuple(scores.shape)} "
                         f"and {tuple(gt.shape)}")
    if gt.numel() == 0 or scores.shape[-1] == 0:
        raise ValueError("no questions or no candidates to rank")
    if gt.is_floating_point():
        raise ValueError("gt_index must hold integer candidate indices")
    if not torch.isfinite(scores.float()).all():
        raise ValueError("scores hold NaN or infinite values")
    gt = gt.long().to(scores.device)
    if gt.min() < 0 or gt.max() >= scores.shape[-1]:
        raise ValueError(f"gt_index must lie in [0, {scores.shape[-1]})")
    gt_score = scores.gather(-1, gt.unsqueeze(-1))
    return (scores >= gt_score).sum(dim=-1)  # the ground truth counts itself: 1-based


def ranking_metrics(scores, gt_index, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """{"mrr", "r{k}" for each k, "mean_rank"} over all questions (see the module docstring)."""
    scores = torch.as_tensor(scores)
    num_candidates = scores.shape[-1] if scores.ndim else 0
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    if max(ks) > num_candidates:
        raise ValueError(f"K={max(ks)} exceeds the {num_candidates} candidates per question")
    ranks = answer_ranks(scores, gt_index).flatten().double()
    out = {"mrr": (1.0 / ranks).mean().item()}
    out.update({f"r{k}": (ranks <= k).double().mean().item() for k in ks})
    out["mean_rank"] = ranks.mean().item()
    return out
