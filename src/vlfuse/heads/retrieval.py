"""Retrieval heads: a dual-encoder head (two Features -> a shared embedding space) and an ITM head.

DualEncoderHead projects each encoder's pooled features to `embed_dim` and L2-normalises them, so
image-text similarity is a cosine; it owns the learnable temperature (through `ContrastiveLoss`),
so the temperature is saved with the model. ITMHead turns a fusion's pooled output into two logits,
no match / match (class 1 = match, as losses.itm expects), for LAVIS-style re-ranking.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.contrastive import ContrastiveLoss
from ..types import Features
from .classifier import ClassifierHead


class DualEncoderHead(nn.Module):
    """image, text Features -> (image embeddings [B_i, E], text embeddings [B_t, E]), unit length.

    `contrastive` is the InfoNCE loss with the learnable logit scale (1 / temperature, clamped to
    [1, 100]); it gathers the embeddings of every process under distributed training.
    """

    def __init__(self, dim: int, embed_dim: int = 256, temperature: float = 0.07, learnable_temperature: bool = True):
        super().__init__()
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        self.image_proj = nn.Linear(dim, embed_dim)
        self.text_proj = nn.Linear(dim, embed_dim)
        self.contrastive = ContrastiveLoss(temperature, learnable=learnable_temperature, gather=True)

    def embed_image(self, image: Features) -> torch.Tensor:
        return F.normalize(self.image_proj(image.pooled), dim=-1)

    def embed_text(self, text: Features) -> torch.Tensor:
        return F.normalize(self.text_proj(text.pooled), dim=-1)

    def forward(self, image: Features, text: Features) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_image(image), self.embed_text(text)

    @property
    def scale(self) -> torch.Tensor:
        """The current logit scale s = 1 / temperature (no gradient)."""
        return self.contrastive.scale

    def loss(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE of row-aligned pairs, at the learnable temperature."""
        return self.contrastive(image_embeddings, text_embeddings)


class ITMHead(ClassifierHead):
    """Image-text matching: a fusion's pooled output -> 2 logits (no match, match).

    hidden=0 (default) is ALBEF's / BLIP's single Linear; hidden > 0 puts an MLP in front.
    """

    def __init__(self, dim: int, hidden: int = 0, dropout: float = 0.0):
        super().__init__(dim, 2, hidden, dropout)


def match_score(logits: torch.Tensor) -> torch.Tensor:
    """ITM logits [N, 2] -> the log-odds of a match [N], the ITM term of the re-ranking score."""
    return logits[:, 1] - logits[:, 0]
