"""Every fusion of the catalogue at one stated size: region features + word features -> fusion -> classes.

The encoders are left out (their cost does not depend on the fusion): the inputs are a projection
of fixed region features and an embedding of the words, so each row times the fusion and its head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlfuse.models.factory import FUSIONS, build_component

from .pairs import Batch, Size, _region_features, _text_features

# mmbt runs a pretrained BERT-family model over the words: it has no size to match the others at.
SKIPPED = {"mmbt": "runs a pretrained text model (its size is the pretrained model's), timed in the pairs table"}
TRANSFORMER_FUSIONS = ("cross_attention", "co_attention", "single_stream")


class FusionClassifier(nn.Module):
    def __init__(self, name: str, s: Size):
        super().__init__()
        spec = {"name": name}
        if name in TRANSFORMER_FUSIONS:
            spec.update(layers=s.layers, heads=s.heads)
        if name == "single_stream":
            spec["max_text_length"] = s.text_tokens
        self.embed = nn.Embedding(s.vocab, s.dim)
        self.visual = nn.Linear(s.dim, s.dim)
        self.fusion = build_component(FUSIONS, spec, "fusion", dim=s.dim)
        self.head = nn.Linear(s.dim, s.classes)

    def forward(self, b: Batch) -> torch.Tensor:
        return self.head(self.fusion(_region_features(self.visual(b.regions), b), _text_features(self.embed, b)).pooled)


def fusion_names() -> list[str]:
    return [name for name in FUSIONS if name not in SKIPPED]


def loss_of(model: nn.Module, b: Batch) -> torch.Tensor:
    return F.cross_entropy(model(b), b.labels)
