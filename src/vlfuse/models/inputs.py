"""What a model's encoders read: raw inputs, or a frozen encoder's output computed earlier.

A frozen encoder splits into `frozen_features` (the part that never changes: run once and stored by
data.feature_cache, or kept in memory) and `from_frozen` (the part that trains). Every model that
takes cached features goes through these two functions, so the split is written once.
"""

from __future__ import annotations

import torch
from torch import nn

from ..types import Features


def encode_images(encoder: nn.Module, images: torch.Tensor | None, image_features: torch.Tensor | None = None
                  ) -> Features:
    """images [B, 3, H, W], uint8 or float in [0, 1] -> the encoder's Features; or, given image_features
    (the frozen part's output; float16 when held in memory), Features from those."""
    if image_features is not None:
        return encoder.from_frozen(image_features.float())
    if images.dtype == torch.uint8:
        images = images.float() / 255
    return encoder(images)


def encode_texts(encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 text_states: torch.Tensor | None = None) -> Features:
    """Token ids [B, L] -> the encoder's Features; or, given text_states [B, L, H] (the frozen part's
    states of the same tokens, padded like them), Features from those."""
    if text_states is not None:
        return encoder.from_frozen(text_states, attention_mask)
    return encoder(input_ids, attention_mask)
