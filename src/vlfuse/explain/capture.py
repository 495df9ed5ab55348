"""Run a VisionLanguageModel once and keep what its image encoder returned (the tokens' boxes)."""

from __future__ import annotations

import torch
from torch import nn

from ..types import Features, FusionOutput


def run_model(model: nn.Module, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              need_weights: bool = False) -> tuple[torch.Tensor, FusionOutput, Features]:
    """(logits, fused, image Features); images and questions pair up row by row."""
    seen: dict[str, Features] = {}
    # a hook, not a second encoder call: Grad-CAM needs the very tensors the fusion read
    handle = model.image_encoder.register_forward_hook(lambda module, args, out: seen.setdefault("image", out))
    try:
        logits, fused = model(images, input_ids, attention_mask, need_weights=need_weights)
    finally:
        handle.remove()
    return logits, fused, seen["image"]


def fusion_name(model: nn.Module) -> str:
    """The config name of the model's fusion (its class name for one built by hand)."""
    from ..models.factory import FUSIONS

    kind = type(model.fusion)
    return next((name for name, cls in FUSIONS.items() if cls is kind), kind.__name__)
