"""What is traced: a model's forward pass as a module of plain tensors in, logits out.

The graph takes uint8 images [B_img, 3, S, S], input_ids and attention_mask [B_q, L] and image_index
[B_q] (which image each question is about, so an image is encoded once for all of its questions),
all with dynamic batch and sequence axes. A region encoder's model also takes the proposed regions
(proposal.REGION_INPUTS, computed in numpy outside the graph).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .proposal import REGION_INPUTS

TEXT_INPUTS = ("images", "input_ids", "attention_mask", "image_index")


def proposal_settings(model: nn.Module) -> dict | None:
    """A region encoder's proposal settings (its step outside the graph), or None for any other encoder."""
    encoder = model.image_encoder
    if not hasattr(encoder, "encode_regions"):
        return None
    return {"max_regions": encoder.max_regions, "threshold": encoder.threshold, "min_area": encoder.min_area}


class AnswerGraph(nn.Module):
    """A VisionLanguageModel (vqa, matching, classification) as logits [B_q, answers]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images, input_ids, attention_mask, image_index, region_boxes=None, region_centroids=None,
                region_colors=None, region_areas=None, region_mask=None):
        images = images.float() / 255
        if region_boxes is not None:
            from ..encoders.regions import Regions

            regions = Regions(region_boxes, region_centroids, region_colors, region_areas, region_mask)
            image = self.model.image_encoder.encode_regions(images, regions)
        else:
            image = self.model.image_encoder(images)
        logits, _ = self.model.from_image_features(image, input_ids, attention_mask, image_index)
        return logits


def input_names(model: nn.Module) -> list[str]:
    return [*TEXT_INPUTS, *(REGION_INPUTS if proposal_settings(model) else ())]


def dynamic_shapes(model: nn.Module) -> dict[str, dict]:
    """Batch axes (images, questions) and the sequence axis, by input name, for torch.export."""
    dim = torch.export.Dim
    images, questions, length = dim("images"), dim("questions"), dim("length")
    shapes = {"images": {0: images}, "input_ids": {0: questions, 1: length},
              "attention_mask": {0: questions, 1: length}, "image_index": {0: questions}}
    return shapes | ({name: {0: images} for name in REGION_INPUTS} if proposal_settings(model) else {})


def graph_inputs(images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 image_index: torch.Tensor | None, proposal: dict | None) -> dict[str, np.ndarray]:
    """The graph's named inputs for one batch: uint8 images, token ids and mask, image_index (None:
    question i reads image i) and, for a region encoder (proposal: its settings), the regions."""
    from .proposal import find_regions

    if image_index is None:
        image_index = torch.arange(len(input_ids))
    images = images.cpu().numpy()
    feeds = {"images": images, "input_ids": input_ids.cpu().long().numpy(),
             "attention_mask": attention_mask.cpu().bool().numpy(), "image_index": image_index.cpu().long().numpy()}
    if proposal is not None:
        feeds.update(find_regions(images.astype(np.float32) / 255, **proposal))
    return feeds
