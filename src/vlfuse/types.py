"""The two contracts every encoder and fusion module speaks (see DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Features:
    """What every encoder returns.

    tokens: [B, N, D]; mask: [B, N] bool, True where the token is real; pooled: [B, D].
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def index_select(self, index: torch.Tensor) -> "Features":
        """Rows `index` of the batch: lets one image's features serve all of its questions."""
        return Features(self.tokens.index_select(0, index), self.mask.index_select(0, index),
                        self.pooled.index_select(0, index))


@dataclass
class FusionOutput:
    """What every fusion module returns.

    pooled: [B, D]; tokens: [B, N', D] or None; attentions: named weight tensors, filled only
    when the caller asked for them (need_weights=True).
    """

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    attentions: dict[str, torch.Tensor] = field(default_factory=dict)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens only, so padding never changes the result."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)
