"""Masked region modelling of UNITER (Chen et al., 2020, "UNITER: UNiversal Image-TExt
Representation Learning"): mask some image regions, then regress their features (MRFR) and
match their detector class distributions (MRC-kl) from the context."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_mask, check_rows, check_same_shape, zero_loss


def choose_masked_regions(mask: torch.Tensor, probability: float = 0.15, at_least_one: bool = True,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Which regions to mask: each real region with probability `probability`.

    mask: [B, N], True for real regions; padding is never chosen. at_least_one: an image whose
    draw chose nothing gets one real region at random, so every image carries a target (as UNITER
    does). generator must live on mask's device. Returns [B, N] bool.
    """
    check_rows("mask", mask)
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must lie in [0, 1], got {probability}")
    mask = mask.bool()
    chosen = mask & (torch.rand(mask.shape, generator=generator, device=mask.device) < probability)
    if at_least_one:
        empty = ~chosen.any(1) & mask.any(1)
        # A random real region per row: the argmax of uniform scores over real regions.
        scores = torch.rand(mask.shape, generator=generator, device=mask.device).masked_fill(~mask, -1.0)
        pick = torch.zeros_like(chosen).scatter_(1, scores.argmax(1, keepdim=True), True)
        chosen |= pick & empty[:, None]
    return chosen


def mask_regions(features: torch.Tensor, region_mask: torch.Tensor) -> torch.Tensor:
    """features [B, N, D] with the chosen regions zeroed (UNITER's masking of region features)."""
    region_mask = check_mask("region_mask", region_mask, features.shape[:2])
    return features.masked_fill(region_mask.unsqueeze(-1), 0.0)


def mrfr_loss(predicted: torch.Tensor, target: torch.Tensor, region_mask: torch.Tensor) -> torch.Tensor:
    """Masked region feature regression: mean squared error over the masked regions only,

        L = 1/(|M| D) sum_{r in M} |predicted_r - target_r|^2

    predicted, target: [B, N, D] (target: the original, unmasked features); region_mask: [B, N].
    0 (connected to the graph) when no region is masked.
    """
    check_rows("predicted", predicted, dim=3)
    check_same_shape("predicted", predicted, "target", target)
    region_mask = check_mask("region_mask", region_mask, predicted.shape[:2])
    if not region_mask.any():
        return zero_loss(predicted)
    return F.mse_loss(predicted[region_mask], target[region_mask].to(predicted.dtype))


def mrc_kl_loss(logits: torch.Tensor, soft_labels: torch.Tensor, region_mask: torch.Tensor,
                label_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Masked region classification with KL divergence (MRC-kl): over masked regions that have a
    label, the mean of

        KL(soft_labels_r || softmax(logits_r)) = sum_c p_rc (log p_rc - log softmax(logits_r)_c)

    logits: [B, N, C]; soft_labels: [B, N, C], the detector's class distribution per region;
    region_mask: [B, N]; label_mask: optional [B, N], True where a soft label exists (images or
    regions without detector output are skipped). 0 when nothing is counted.
    """
    check_rows("logits", logits, dim=3)
    check_same_shape("logits", logits, "soft_labels", soft_labels)
    counted = check_mask("region_mask", region_mask, logits.shape[:2])
    if label_mask is not None:
        counted = counted & check_mask("label_mask", label_mask, logits.shape[:2])
    if not counted.any():
        return zero_loss(logits)
    log_q = logits[counted].log_softmax(-1)
    return F.kl_div(log_q, soft_labels[counted].to(log_q.dtype), reduction="none").sum(-1).mean()
