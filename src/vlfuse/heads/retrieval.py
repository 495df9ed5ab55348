"""Retrieval heads: a dual-encoder head (two Features -> a shared embedding space) and an ITM head.

DualEncoderHead projects each encoder's pooled features to `embed_dim` and L2-normalises them, so
image-text similarity is a cosine; it owns the learnable temperature (through `ContrastiveLoss`),
so the temperature is saved with the model. Over a frozen image encoder the image side can be made
richer than one Linear of the mean: `image_pool="attention"` lets learned queries weigh the image
tokens (grid cells), `image_hidden` adds a GELU MLP beside the Linear. Its projections also embed each
token, which gives a finer score of a pair for re-ranking, `max_sim` (retrieval.reranker: tokens).
ITMHead turns a fusion's pooled output into two logits, no match / match (class 1 = match, as
losses.itm expects), for LAVIS-style re-ranking.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.attention import MultiHeadAttention
from ..losses.contrastive import ContrastiveLoss
from ..types import Features
from .classifier import ClassifierHead


class AttentionPool(nn.Module):
    """Features -> [B, D]: the encoder's pooled vector plus what learned queries read from its tokens.

    `queries` learned vectors attend over the tokens (padding ignored) through multi-head attention;
    their outputs are averaged and added to `pooled`, so at the start the pool is close to the mean
    pooling it replaces and the attention learns which tokens (e.g. which grid cells) matter.
    """

    def __init__(self, dim: int, heads: int = 4, queries: int = 1):
        super().__init__()
        if queries < 1:
            raise ValueError(f"queries must be >= 1, got {queries}")
        self.queries = nn.Parameter(torch.randn(queries, dim) * dim ** -0.5)
        self.attention = MultiHeadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: Features) -> torch.Tensor:
        query = self.queries.expand(len(features.tokens), -1, -1)
        read, _ = self.attention(query, features.tokens, features.tokens, features.mask)
        return features.pooled + self.norm(read.mean(1))


def max_sim(image: torch.Tensor, image_mask: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Late interaction from the query's side (ColBERT's MaxSim; Khattab & Zaharia, 2020) of row-aligned
    pairs: (image query [B]: each image token's best cosine over the words, averaged over the image
    tokens; text query [B]: each word's best cosine over the image tokens, averaged over the words).

    image [B, N_v, E], text [B, N_t, E]: unit token embeddings, with their bool masks; padding tokens are
    never anyone's best and never averaged. Each score is in [-1, 1]. Scored from the query's side, a
    candidate gains by holding what the query holds; from the candidate's side a photo full of generic
    cells would match any caption (a hub)."""
    sim = torch.einsum("bve,bwe->bwv", image, text).float()  # [B, N_t, N_v]
    cells = sim.masked_fill(~text_mask[:, :, None], -2.0).amax(1)  # [B, N_v]: each image token's best word
    words = sim.masked_fill(~image_mask[:, None, :], -2.0).amax(2)  # [B, N_t]: each word's best image token
    return (cells * image_mask).sum(1) / image_mask.sum(1).clamp(min=1), \
        (words * text_mask).sum(1) / text_mask.sum(1).clamp(min=1)


class DualEncoderHead(nn.Module):
    """image, text Features -> (image embeddings [B_i, E], text embeddings [B_t, E]), unit length.

    `contrastive` is the InfoNCE loss with the learnable logit scale (1 / temperature, clamped to
    [1, 100]); it gathers the embeddings of every process under distributed training.
    image_pool: "mean" embeds the image encoder's pooled vector (the mean of its tokens for the grid
    encoders); "attention" adds an `AttentionPool` of `pool_queries` queries over its tokens.
    image_hidden > 0: the image projection is Linear + a GELU MLP of that width (residual), so the
    embedding of a frozen encoder's features is no longer linear in them.
    """

    def __init__(self, dim: int, embed_dim: int = 256, temperature: float = 0.07, learnable_temperature: bool = True,
                 image_pool: str = "mean", pool_heads: int = 4, pool_queries: int = 1, image_hidden: int = 0):
        super().__init__()
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        if image_pool not in ("mean", "attention"):
            raise ValueError(f"image_pool must be 'mean' or 'attention', got {image_pool!r}")
        if image_hidden < 0:
            raise ValueError(f"image_hidden must be >= 0, got {image_hidden}")
        self.image_proj = nn.Linear(dim, embed_dim)
        self.text_proj = nn.Linear(dim, embed_dim)
        # Built only when asked, so models saved before these options load unchanged.
        self.image_pool = AttentionPool(dim, pool_heads, pool_queries) if image_pool == "attention" else None
        self.image_mlp = nn.Sequential(nn.Linear(dim, image_hidden), nn.GELU(), nn.Linear(image_hidden, embed_dim)) \
            if image_hidden else None
        self.contrastive = ContrastiveLoss(temperature, learnable=learnable_temperature, gather=True)

    def embed_image(self, image: Features) -> torch.Tensor:
        pooled = image.pooled if self.image_pool is None else self.image_pool(image)
        projected = self.image_proj(pooled)
        if self.image_mlp is not None:
            projected = projected + self.image_mlp(pooled)
        return F.normalize(projected, dim=-1)

    def embed_text(self, text: Features) -> torch.Tensor:
        return F.normalize(self.text_proj(text.pooled), dim=-1)

    def forward(self, image: Features, text: Features) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_image(image), self.embed_text(text)

    def token_scores(self, image: Features, text: Features) -> tuple[torch.Tensor, torch.Tensor]:
        """`max_sim` of row-aligned pairs, (image query [B], text query [B]), with each token embedded by the
        projection that embeds its side's pooled vector (with mean pooling a photo's embedding is the
        normalised mean of its cells' unnormalised ones), so it needs no training of its own."""
        return max_sim(F.normalize(self.image_proj(image.tokens), dim=-1), image.mask,
                       F.normalize(self.text_proj(text.tokens), dim=-1), text.mask)

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
