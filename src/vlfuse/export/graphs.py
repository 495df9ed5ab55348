"""What is traced: a model's forward pass as modules of plain tensors in, tensors out.

Images go in as uint8 [B_img, 3, S, S], texts as input_ids and attention_mask [B_q, L], with dynamic
batch and sequence axes. A region encoder's graphs also take the proposed regions
(proposal.REGION_INPUTS, computed in numpy outside the graph) beside the images.

- answers (vqa, matching, classification): images, texts and image_index [B_q] (which image each
  question is about, so an image is encoded once for all of its questions) -> logits.
- retrieval: images -> unit embeddings; texts -> unit embeddings; and, with an ITM head, row-aligned
  images and texts -> (cosine similarity, ITM log-odds of a match).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..types import Features
from .proposal import REGION_INPUTS


def proposal_settings(model: nn.Module) -> dict | None:
    """A region encoder's proposal settings (its step outside the graph), or None for any other encoder."""
    encoder = model.image_encoder
    if not hasattr(encoder, "encode_regions"):
        return None
    return {"max_regions": encoder.max_regions, "threshold": encoder.threshold, "min_area": encoder.min_area}


def encode_images(model: nn.Module, images: torch.Tensor, regions: tuple) -> Features:
    """uint8 images (and, for a region encoder, its proposed regions) -> the image encoder's Features."""
    images = images.float() / 255
    if regions[0] is None:
        return model.image_encoder(images)
    from ..encoders.regions import Regions

    return model.image_encoder.encode_regions(images, Regions(*regions))


class AnswerGraph(nn.Module):
    """A VisionLanguageModel (vqa, matching, classification) -> answer logits [B_q, answers]."""

    inputs, outputs, aligned = ("images", "input_ids", "attention_mask", "image_index"), ("logits",), False

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images, input_ids, attention_mask, image_index, region_boxes=None, region_centroids=None,
                region_colors=None, region_areas=None, region_mask=None):
        image = encode_images(self.model, images, (region_boxes, region_centroids, region_colors, region_areas,
                                                   region_mask))
        return self.model.from_image_features(image, input_ids, attention_mask, image_index)[0]


class ImageEmbedGraph(AnswerGraph):
    """A RetrievalModel's image side -> unit embeddings [B_img, E]."""

    inputs, outputs = ("images",), ("image_embeddings",)

    def forward(self, images, region_boxes=None, region_centroids=None, region_colors=None, region_areas=None,
                region_mask=None):
        regions = (region_boxes, region_centroids, region_colors, region_areas, region_mask)
        return self.model.head.embed_image(encode_images(self.model, images, regions))


class TextEmbedGraph(AnswerGraph):
    """A RetrievalModel's text side -> unit embeddings [B_q, E]."""

    inputs, outputs = ("input_ids", "attention_mask"), ("text_embeddings",)

    def forward(self, input_ids, attention_mask):
        return self.model.head.embed_text(self.model.encode_texts(input_ids, attention_mask))


class MatchGraph(AnswerGraph):
    """A RetrievalModel that can re-rank, row-aligned pairs -> (cosine similarity [B], its re-ranking score [B]
    of each image as the text's candidate: RetrievalModel.rerank_scores, what an index re-ranks by)."""

    inputs, outputs, aligned = ("images", "input_ids", "attention_mask"), ("similarity", "rerank_score"), True

    def forward(self, images, input_ids, attention_mask, region_boxes=None, region_centroids=None,
                region_colors=None, region_areas=None, region_mask=None):
        regions = (region_boxes, region_centroids, region_colors, region_areas, region_mask)
        image, text = encode_images(self.model, images, regions), self.model.encode_texts(input_ids, attention_mask)
        image_emb, text_emb = self.model.head(image, text)
        return (image_emb * text_emb).sum(-1), self.model.rerank_scores(image, text)[1]


def task_graphs(model: nn.Module, task: str) -> dict[str, AnswerGraph]:
    """The graphs of a model, by file name."""
    if task != "retrieval":
        return {"model.onnx": AnswerGraph(model)}
    graphs = {"image.onnx": ImageEmbedGraph(model), "text.onnx": TextEmbedGraph(model)}
    return graphs | ({"match.onnx": MatchGraph(model)} if model.can_rerank else {})


def input_names(graph: AnswerGraph) -> list[str]:
    regions = "images" in graph.inputs and proposal_settings(graph.model) is not None
    return [*graph.inputs, *(REGION_INPUTS if regions else ())]


def dynamic_shapes(graph: AnswerGraph) -> dict[str, dict]:
    """Batch axes (images, texts: one axis where rows pair up) and the sequence axis, for torch.export."""
    dim = torch.export.Dim
    images, length = dim("images"), dim("length")
    texts = images if graph.aligned else dim("texts")
    axes = {"images": {0: images}, "input_ids": {0: texts, 1: length}, "attention_mask": {0: texts, 1: length},
            "image_index": {0: texts}} | {name: {0: images} for name in REGION_INPUTS}
    return {name: axes[name] for name in input_names(graph)}


def graph_inputs(names: list[str], proposal: dict | None, **tensors: torch.Tensor) -> dict[str, np.ndarray]:
    """The named numpy inputs of a graph taking `names`: the tensors given (uint8 images, token ids and
    mask, image_index) and, for a region encoder (proposal: its settings), the regions of the images."""
    from .proposal import find_regions

    feeds = {name: tensors[name].cpu().numpy() for name in names if name in tensors}
    for name, dtype in (("input_ids", np.int64), ("attention_mask", bool), ("image_index", np.int64)):
        if name in feeds:
            feeds[name] = feeds[name].astype(dtype, copy=False)
    if proposal is not None and "region_boxes" in names:
        feeds.update(find_regions(feeds["images"].astype(np.float32) / 255, **proposal))
    return feeds
