"""VisionLanguageModel: image encoder + text encoder + fusion + head, each passed in."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..types import Features, FusionOutput, fusion_trait
from .inputs import encode_images, encode_texts


def check_text_input(text_encoder: nn.Module, fusion: nn.Module) -> None:
    """A fusion that runs a pretrained model over the text's input embeddings (MMBT) needs a text
    encoder that stops at them, from the same model folder; every other fusion needs finished features."""
    wants = fusion_trait(fusion, "reads_text_embeddings")
    gives = getattr(text_encoder, "embeddings_only", False)
    if wants and not gives:
        raise ConfigError(f"fusion {type(fusion).__name__} reads the text model's input embeddings: set "
                          "model.text_encoder to {name: pretrained, embeddings_only: true} with the fusion's path")
    if gives and not wants:
        raise ConfigError("model.text_encoder.embeddings_only=true gives raw word embeddings, which only a fusion "
                          "that runs the rest of the pretrained model reads (mmbt)")
    if wants and text_encoder.path != fusion.path:
        raise ConfigError(f"model.text_encoder.path ({text_encoder.path}) and model.fusion.path ({fusion.path}) "
                          "must name the same pretrained model: the fusion runs the rest of it")


class VisionLanguageModel(nn.Module):
    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, fusion: nn.Module, head: nn.Module):
        super().__init__()
        check_text_input(text_encoder, fusion)
        self.image_encoder, self.text_encoder, self.fusion, self.head = image_encoder, text_encoder, fusion, head

    def forward(self, images: torch.Tensor | None, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                image_index: torch.Tensor | None = None, need_weights: bool = False, graph=None,
                image_features: torch.Tensor | None = None, text_states: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, FusionOutput]:
        """images: [B_img, 3, H, W], uint8 or float in [0, 1]; input_ids, attention_mask: [B_q, L].

        image_index [B_q] says which image each question is about, so each image is encoded once
        for all of its questions; without it, images and questions pair up row by row. graph: the
        images' scene graphs (a data.scene_graph.SceneGraphBatch, one per image), for graph fusion.
        image_features / text_states: the frozen encoders' outputs computed earlier (data.feature_cache),
        read instead of running their frozen parts (images may then be None).
        """
        return self.from_image_features(self.encode_images(images, image_features), input_ids, attention_mask,
                                        image_index, need_weights, graph, text_states)

    def encode_images(self, images: torch.Tensor | None, image_features: torch.Tensor | None = None) -> Features:
        """Images (or a frozen encoder's cached output) -> Features: models.inputs."""
        return encode_images(self.image_encoder, images, image_features)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     text_states: torch.Tensor | None = None) -> Features:
        """Token ids (or a frozen text encoder's cached states) -> Features: models.inputs."""
        return encode_texts(self.text_encoder, input_ids, attention_mask, text_states)

    def from_image_features(self, image: Features, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            image_index: torch.Tensor | None = None, need_weights: bool = False, graph=None,
                            text_states: torch.Tensor | None = None) -> tuple[torch.Tensor, FusionOutput]:
        """`forward` after the image encoder: for image features computed once (a frozen encoder's)."""
        text = self.encode_texts(input_ids, attention_mask, text_states)
        extra = {}
        if graph is not None:  # scene graphs -> entity nodes and labelled edges, per question
            from .scene_graph_input import external_graph

            extra["graph"] = external_graph(self.text_encoder, self.fusion, graph, image, text, input_ids,
                                            attention_mask, image_index)
        if image_index is None:
            fused = self.fusion(image, text, need_weights=need_weights, **extra)
        elif fusion_trait(self.fusion, "accepts_image_index"):  # it reads each image once for all questions
            fused = self.fusion(image, text, need_weights=need_weights, image_index=image_index, **extra)
        else:
            fused = self.fusion(image.index_select(image_index), text, need_weights=need_weights, **extra)
        return self.head(fused), fused
