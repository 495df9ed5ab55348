"""VQA soft-score loss: binary cross-entropy against each answer's soft score (Teney et al. 2018).

VQA v2 gives 10 human answers per question; answer a's target is min(1, #humans who said a / 3)
(`AnswerVocab.soft_targets`), so "2" said by 4 annotators and "3" by 2 are targets 1.0 and 0.67,
not one hard class. The loss treats every answer as its own sigmoid:

    loss = mean over questions of sum over answers of BCE(sigmoid(logit_qa), target_qa)

(the per-answer mean of BCE times the number of answers, as in the bottom-up top-down VQA model
and MMF's `logit_bce`). Summing over answers keeps the gradient of the few true answers from
being diluted by the thousands of wrong ones. With one answer per question the target is 1.0 on
that answer, a one-vs-rest version of cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_rows


def dense_soft_targets(sparse: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Rows (question, class, score) [K, 3] -> targets [questions, classes], 0 elsewhere."""
    if sparse.ndim != 2 or sparse.shape[1] != 3:
        raise ValueError(f"sparse soft targets must be [K, 3] rows (question, class, score), got {tuple(sparse.shape)}")
    dense = torch.zeros(shape, dtype=torch.float, device=sparse.device)
    if len(sparse):
        rows, cols = sparse[:, 0].long(), sparse[:, 1].long()
        if rows.max() >= shape[0] or cols.max() >= shape[1] or min(rows.min(), cols.min()) < 0:
            raise ValueError(f"soft target index out of range for {shape[0]} questions x {shape[1]} classes")
        dense[rows, cols] = sparse[:, 2].float()
    return dense


def soft_score_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits, targets [B, C] (targets in [0, 1]) -> 0-d loss: BCE summed over answers, mean over questions."""
    check_rows("logits", logits)
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape")
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="sum") / logits.shape[0]


class SoftScoreBCE(nn.Module):
    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return soft_score_bce(logits, targets)
