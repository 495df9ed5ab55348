"""Cross-modal translation: predict one modality's embedding from the other's, so the source
embedding must carry what the target modality holds (Pham et al., 2019, "Found in Translation:
Learning Robust Joint Representations by Cyclic Translations Between Modalities")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_rows, check_same_shape

KINDS = ("cosine", "mse")


def translation_loss(predicted: torch.Tensor, target: torch.Tensor, kind: str = "cosine",
                     detach_target: bool = True) -> torch.Tensor:
    """Distance between translated and target embeddings, averaged over the batch:

        cosine: mean_i 1 - cos(predicted_i, target_i)        mse: mean_{i,d} (predicted - target)^2

    predicted, target: [B, D]. detach_target: stop the gradient into the target (the default), so
    the two encoders cannot satisfy the loss by collapsing both embeddings to a constant.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    check_rows("predicted", predicted)
    check_same_shape("predicted", predicted, "target", target)
    if detach_target:
        target = target.detach()
    if kind == "mse":
        return F.mse_loss(predicted, target)
    return (1 - F.cosine_similarity(predicted, target, dim=-1)).mean()


def perturb(x: torch.Tensor, noise_std: float = 0.0, dropout: float = 0.0,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, noise_std^2), then inverted dropout with rate `dropout`: a corrupted source makes
    the translation robust to a noisy or partly missing modality. generator: on x's device."""
    if noise_std < 0 or not 0.0 <= dropout < 1.0:
        raise ValueError(f"need noise_std >= 0 and 0 <= dropout < 1, got {noise_std}, {dropout}")
    if noise_std > 0:
        x = x + noise_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if dropout > 0:
        keep = torch.rand(x.shape, generator=generator, device=x.device) >= dropout
        x = x * keep / (1 - dropout)
    return x


class CrossModalTranslator(nn.Module):
    """MLP from source embeddings [B, source_dim] to target embeddings [B, target_dim].

    In training mode the source is perturbed first (`noise_std`, `dropout`); in eval mode never.
    `loss(source, target)` = translation_loss(self(source), target). For the cyclic variant of the
    paper, add a second translator back: back.loss(self(source), source).
    """

    def __init__(self, source_dim: int, target_dim: int | None = None, hidden: int | None = None,
                 kind: str = "cosine", noise_std: float = 0.0, dropout: float = 0.0,
                 detach_target: bool = True):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        target_dim, hidden = target_dim or source_dim, hidden or source_dim
        self.net = nn.Sequential(nn.Linear(source_dim, hidden), nn.GELU(), nn.Linear(hidden, target_dim))
        self.kind, self.noise_std, self.dropout, self.detach_target = kind, noise_std, dropout, detach_target

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        if self.training:
            source = perturb(source, self.noise_std, self.dropout)
        return self.net(source)

    def loss(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return translation_loss(self(source), target, self.kind, self.detach_target)
