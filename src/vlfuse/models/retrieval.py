"""RetrievalModel: image encoder + text encoder + embedding head + optional fusion and ITM head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..heads.retrieval import match_score
from ..types import Features, fusion_trait
from .inputs import encode_images, encode_texts
from .vlm import check_text_input


CANNOT_RERANK = ("this retrieval model cannot re-rank: it has no matching head (model.fusion: null); "
                 "retrieval.reranker: tokens re-ranks without one")


class RetrievalModel(nn.Module):
    """Two-stage image-text retrieval (LAVIS): embeddings for the first stage, matching for re-ranking.

    `head` (heads.retrieval.DualEncoderHead) maps each encoder's Features to unit embeddings;
    `fusion` + `itm_head` (both or neither) score a pair of Features as match / no match. `reranker`
    (retrieval.reranker) picks what re-ranks: "itm", that matching head, or "tokens", the head's token-wise
    `max_sim`, which every model has.
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, head: nn.Module,
                 fusion: nn.Module | None = None, itm_head: nn.Module | None = None):
        super().__init__()
        if (fusion is None) != (itm_head is None):
            raise ConfigError("a retrieval model needs both a fusion and an ITM head to re-rank, or neither")
        if getattr(text_encoder, "embeddings_only", False) or fusion_trait(fusion, "reads_text_embeddings"):
            raise ConfigError("task retrieval embeds whole sentences: model.text_encoder.embeddings_only and "
                              "fusions that run the text model themselves (mmbt) do not fit it")
        if fusion is not None:
            check_text_input(text_encoder, fusion)
        self.image_encoder, self.text_encoder, self.head = image_encoder, text_encoder, head
        self.fusion, self.itm_head = fusion, itm_head
        # retrieval.flip_average and retrieval.reranker, set by the factory (and by evaluation's config)
        self.flip_average, self.reranker = False, "itm"

    @property
    def can_rerank(self) -> bool:
        return self.reranker == "tokens" or self.itm_head is not None

    def rerank_scores(self, image: Features, text: Features) -> tuple[torch.Tensor, torch.Tensor]:
        """The re-ranking scores of row-aligned image and text Features, on the ITC logits' scale: (for an
        image query ranking texts [B], for a text query ranking images [B]). reranker "tokens": the head's
        `max_sim` from each query's side x the learned logit scale; "itm": the matching head's log-odds,
        the same both ways."""
        if self.reranker == "tokens":
            image_query, text_query = self.head.token_scores(image, text)
            return image_query * self.head.scale, text_query * self.head.scale
        log_odds = match_score(self.match(image, text))
        return log_odds, log_odds

    def encode_images(self, images: torch.Tensor | None, image_features: torch.Tensor | None = None) -> Features:
        """Images (or a frozen encoder's cached output, data.feature_cache) -> Features: models.inputs."""
        return encode_images(self.image_encoder, images, image_features)

    def embed_images(self, images: torch.Tensor | None, image_features: torch.Tensor | None = None,
                     mirrored_features: torch.Tensor | None = None, encoded: Features | None = None
                     ) -> torch.Tensor:
        """Unit embeddings [B, E] of images (uint8 [B, 3, S, S]) or of their cached features. With
        flip_average: the renormalised mean of each photo's embedding and its left-right mirror's (test-time
        flip); the mirror is the flipped pixels or, for cached features, `mirrored_features`. `encoded`:
        encode_images' output for these photos, when the caller has it already (the matching head reads it)."""
        if self.flip_average and images is None and mirrored_features is None:
            raise ValueError("retrieval.flip_average over cached features needs the mirrored photos' features")
        embedded = self.head.embed_image(self.encode_images(images, image_features) if encoded is None else encoded)
        if not self.flip_average:
            return embedded
        mirrored = self.encode_images(None if images is None else images.flip(-1), mirrored_features)
        return F.normalize(embedded + self.head.embed_image(mirrored), dim=-1)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     text_states: torch.Tensor | None = None) -> Features:
        """Token ids (or a frozen text encoder's cached states, data.feature_cache) -> Features: models.inputs."""
        return encode_texts(self.text_encoder, input_ids, attention_mask, text_states)

    def match(self, image: Features, text: Features) -> torch.Tensor:
        """ITM logits [B, 2] (class 1 = match) of row-aligned image and text Features."""
        if self.itm_head is None:
            raise ConfigError("this retrieval model has no fusion (model.fusion: null), so no matching head")
        return self.itm_head(self.fusion(image, text))

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit embeddings (images [B_i, E], texts [B_t, E]); their dot products are the ITC scores."""
        return self.head(self.encode_images(images), self.encode_texts(input_ids, attention_mask))
