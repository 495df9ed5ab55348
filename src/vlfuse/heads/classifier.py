"""Answer classifier: the VQA head (answers as classes, as in most VQA v2 models)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from ..types import FusionOutput


class ClassifierHead(nn.Module):
    """logits = MLP(pooled), or with hidden=0 a single Linear (dropout then unused).

    The linear head is what makes late fusion exactly a weighted sum of per-modality logits.
    `loss` is what its logits train with: cross_entropy against the one answer, or soft_bce against
    the VQA v2 soft scores of every human answer (vlfuse.losses.soft_score); the training module reads it.
    """

    def __init__(self, dim: int, num_classes: int, hidden: int = 256, dropout: float = 0.1,
                 loss: Literal["cross_entropy", "soft_bce"] = "cross_entropy"):
        super().__init__()
        self.loss = loss
        if hidden < 0:
            raise ValueError(f"hidden must be >= 0 (0 means one Linear layer), got {hidden}")
        if hidden == 0:
            self.mlp = nn.Linear(dim, num_classes)
        else:
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(hidden, num_classes))
        if loss == "soft_bce":  # start every sigmoid near 1/C, the answers' prior, not 0.5 (Lin et al. 2017,
            # focal loss): otherwise the first hundreds of steps only learn that most answers are wrong
            last = self.mlp if hidden == 0 else self.mlp[-1]
            nn.init.constant_(last.bias, -math.log(max(num_classes - 1, 1)))

    def forward(self, fused: FusionOutput) -> torch.Tensor:
        return self.mlp(fused.pooled)
