"""Masked language modelling loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import zero_loss
from .masking import IGNORE_INDEX


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the masked tokens only (Devlin et al., 2019):

        L = -1/|M| sum_{t in M} log softmax(logits_t)[labels_t],   M = {t : labels_t != -100}

    logits: [..., V]; labels: [...] from `mask_tokens`. To spare the vocabulary projection at
    unmasked positions, pass hidden[labels != -100] through the head and labels[labels != -100].
    With no masked token at all the loss is 0 (still connected to the graph), not NaN.
    """
    if logits.dim() < 2 or logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits must be labels' shape {tuple(labels.shape)} plus a vocabulary "
                         f"dimension, got {tuple(logits.shape)}")
    if labels.numel() == 0:
        raise ValueError("labels is an empty batch")
    counted = labels != IGNORE_INDEX
    if not counted.any():
        return zero_loss(logits)
    return F.cross_entropy(logits[counted], labels[counted])
