"""Answer classifier: the VQA head (answers as classes, as in most VQA v2 models)."""

from __future__ import annotations

import torch
from torch import nn

from ..types import FusionOutput


class ClassifierHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, fused: FusionOutput) -> torch.Tensor:
        return self.mlp(fused.pooled)
