"""Adversarial modality alignment: a discriminator guesses image vs text from an embedding, and a
gradient reversal layer makes the encoders learn to fool it, pushing both modalities into one
modality-invariant space (domain-adversarial training, Ganin & Lempitsky, 2015)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_rows


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)  # a view, so autograd records this node rather than passing x through

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lambd * grad, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """Gradient reversal (Ganin & Lempitsky, 2015, "Unsupervised Domain Adaptation by
    Backpropagation"): the identity forward, dL/dx -> -lambd * dL/dx backward."""
    return _ReverseGradient.apply(x, lambd)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """The paper's schedule lambda(p) = 2 / (1 + exp(-gamma p)) - 1, rising from 0 to ~1 as training
    progress p goes 0 -> 1, so the noisy early discriminator barely disturbs the encoders."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class GradientReversal(nn.Module):
    """`grad_reverse` as a layer; set `.lambd` during training to follow a schedule."""

    def __init__(self, lambd: float = 1.0):
        super().__init__()
        self.lambd = lambd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambd)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}"


def modality_adversarial_loss(image_logits: torch.Tensor, text_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the discriminator, images labelled 1 and texts 0:

        L = 1/2 [ mean_i -log sigmoid(d(image_i)) + mean_j -log(1 - sigmoid(d(text_j))) ]

    Each modality weighs one half whatever the batch sizes. logits: [B_image], [B_text].
    """
    check_rows("image_logits", image_logits, dim=1)
    check_rows("text_logits", text_logits, dim=1)
    image = F.binary_cross_entropy_with_logits(image_logits, torch.ones_like(image_logits))
    text = F.binary_cross_entropy_with_logits(text_logits, torch.zeros_like(text_logits))
    return (image + text) / 2


class ModalityDiscriminator(nn.Module):
    """MLP that tells image embeddings (logit > 0) from text embeddings, behind a gradient reversal.

    One backward of `loss(image, text)` trains the discriminator to separate the modalities and,
    through the reversed gradient, the encoders to make them inseparable. forward(x [B, D]) -> [B].
    """

    def __init__(self, dim: int, hidden: int | None = None, lambd: float = 1.0, dropout: float = 0.0):
        super().__init__()
        hidden = hidden or dim
        self.reverse = GradientReversal(lambd)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.reverse(x)).squeeze(-1)

    def loss(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        check_rows("image", image)
        check_rows("text", text)
        if image.shape[1] != text.shape[1]:
            raise ValueError(f"image {tuple(image.shape)} and text {tuple(text.shape)} must share a width")
        return modality_adversarial_loss(self(image), self(text))
