"""The optimiser every task shares."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TrainConfig


def configure_adamw(model: nn.Module, cfg: TrainConfig, total_steps: int) -> dict:
    """AdamW with linear warm-up then cosine decay to 0, stepped per batch; what every task trains with."""
    # No weight decay on biases, norms and embeddings (the usual transformer recipe); pretrained
    # weights that train (tuned layers, an unfrozen backbone) at train.pretrained_lr when it is set.
    pretrained = {id(p) for m in model.modules() if hasattr(m, "pretrained_parameters")
                  for p in m.pretrained_parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        key = (param.ndim < 2 or "embed" in name, cfg.pretrained_lr is not None and id(param) in pretrained)
        groups.setdefault(key, []).append(param)
    optimizer = torch.optim.AdamW([{"params": params, "weight_decay": 0.0 if no_decay else cfg.weight_decay,
                                    "lr": cfg.pretrained_lr if loaded else cfg.lr}
                                   for (no_decay, loaded), params in sorted(groups.items())], lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, cfg.warmup_steps, max(1, total_steps)))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR factor of `step` of `total`: linear warm-up over `warmup` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def stage_schedule(warmup: int, second_stage: int, total_steps: int, second_scale: float = 1.0):
    """LR factor of a step for a run of two stages (steps before `second_stage`, then the rest): warm-up
    then cosine to 0 in each, the second stage's factor times `second_scale` (its own learning rate)."""
    def factor(step: int) -> float:
        start, end, scale = (0, second_stage, 1.0) if step < second_stage else (second_stage, total_steps,
                                                                                 second_scale)
        return scale * warmup_cosine(step - start, warmup, max(1, end - start))
    return factor


def with_schedule(config: dict, factor) -> dict:
    """configure_adamw's dict with its learning-rate schedule replaced by `factor(step)`."""
    config["lr_scheduler"]["scheduler"] = torch.optim.lr_scheduler.LambdaLR(config["optimizer"], factor)
    return config
