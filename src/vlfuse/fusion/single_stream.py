"""Single-stream fusion: one transformer over [CLS] + words + image tokens (UNITER, VisualBERT).

UNITER (Chen et al., ECCV 2020) and VisualBERT (Li et al., 2019) concatenate both modalities into
one sequence and let every layer's self-attention mix them freely:

  x_cls  = c + P_0 + M_text
  x_word = t_i + P_i + M_text                       (i = 1..Nt, learned text positions)
  x_img  = v_j + LN(W_b [x0, y0, x1, y1, w, h, w*h]_j) + M_image      (UNITER's box embedding)
  X^0    = LN([x_cls; x_word; x_img]),  X^l = TransformerBlock(X^{l-1}) with the joint key mask
  pooled = LN(X^L)_cls, or with readout="words" the mean of LN(X^L) over the words

M_text / M_image are the modality (segment) embeddings: without them (and without positions and
boxes) the layers could not tell which stream a token came from. Image Features without boxes
get the whole-image box, so the embedding acts as a plain image-modality offset there.

readout="words" is for training from scratch: a word that finds its object reaches the output in one
step, where [CLS] must first learn which word to read (two hops; `bench/binding_probe.py` binds in
about half the steps with it). UNITER's [CLS] is learnt in pre-training, which a model trained from
scratch lacks.

joint_geometry=True gives every pair of tokens the geometry between where the two are
(vlfuse.layers.geometry's pair features, added to keys and values as relative attention): an image
token is at its box; a word or [CLS] is where it looked in the layer before (its attention over the
image tokens, mean over heads), and nowhere in the first layer. Between objects this is the region
encoder's relative geometry; from a word to an object, the cross-attention fusion's anchored
geometry; between two words, its word geometry. Needs image boxes; without them the layers read
plainly.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.geometry import between, pair_features_dim, pair_geometry, seen_from
from ..layers.transformer import TransformerBlock
from ..types import Features, FusionOutput, masked_mean


def box_features(boxes: torch.Tensor) -> torch.Tensor:
    """UNITER's 7-d geometry [..., 7]: corners, width, height and area of boxes [..., 4]."""
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return torch.cat([boxes, w[..., None], h[..., None], (w * h)[..., None]], -1)


class SingleStreamFusion(nn.Module):
    """forward(image, text) -> FusionOutput(pooled, tokens = joint sequence [B, 1+Nt+Nv, D]).

    `readout`: "cls" (the [CLS] state, as UNITER) or "words" (the mean of the word states);
    `joint_geometry`: see the module docstring.
    With need_weights: "layer{i}.joint" [B, H, N, N] over the joint sequence ([CLS], words, image),
    and "layer{i}.text_to_image" [B, H, Nt, Nv]: the words' joint weights on the image tokens,
    renormalised over those tokens (where in the image each word looks, comparable with the
    cross-attention fusions' map of the same name).
    """

    token_layout = ("cls", "text", "image")  # [CLS], the words, the image tokens
    accepts_image_index = False
    reads_text_embeddings = False
    accepts_graph = False

    def __init__(self, dim: int = 128, layers: int = 2, heads: int = 4, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, max_text_length: int = 64, readout: str = "cls", joint_geometry: bool = False):
        super().__init__()
        if readout not in ("cls", "words"):
            raise ValueError(f"readout must be 'cls' or 'words', got {readout!r}")
        self.max_text_length, self.readout = max_text_length, readout
        self.cls = nn.Parameter(torch.randn(dim) * 0.02)
        self.position = nn.Embedding(max_text_length + 1, dim)  # position 0 is [CLS]
        self.modality = nn.Embedding(2, dim)  # 0: text and [CLS], 1: image
        self.box = nn.Sequential(nn.Linear(7, dim), nn.LayerNorm(dim))
        self.embed_norm = nn.LayerNorm(dim)
        self.embed_dropout = nn.Dropout(dropout)
        self.joint_geometry = joint_geometry
        relative_dim = pair_features_dim() if joint_geometry else 0
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio, dropout, relative_dim) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: Features, text: Features, need_weights: bool = False) -> FusionOutput:
        b, nt, _ = text.tokens.shape
        if nt > self.max_text_length:
            raise ValueError(f"text has {nt} tokens, more than max_text_length={self.max_text_length}")
        positions = torch.arange(nt + 1, device=text.tokens.device)
        words = torch.cat([self.cls.expand(b, 1, -1), text.tokens], 1)
        words = words + self.position(positions) + self.modality.weight[0]
        boxes = image.boxes
        if boxes is None:
            boxes = image.tokens.new_tensor([0.0, 0.0, 1.0, 1.0]).expand(*image.tokens.shape[:2], 4)
        regions = image.tokens + self.box(box_features(boxes.to(image.tokens.dtype))) + self.modality.weight[1]
        x = self.embed_dropout(self.embed_norm(torch.cat([words, regions], 1)))
        mask = torch.cat([text.mask.new_ones(b, 1), text.mask, image.mask], 1)
        attentions = {}
        pairs = pair_geometry(image.boxes, image.mask) if self.joint_geometry and image.boxes is not None else None
        if pairs is not None:  # where each token is [B, N, K]: an object at its box; [CLS] and words nowhere yet
            objects = torch.eye(image.mask.shape[1], device=x.device).expand(b, -1, -1)
            where = torch.cat([objects.new_zeros(b, nt + 1, objects.shape[-1]), objects], 1)
        for i, block in enumerate(self.blocks):
            relative = None
            if pairs is not None:  # the geometry between where the two tokens are
                relative = between(seen_from(where, pairs), where)
            x, weights = block(x, mask, need_weights or pairs is not None, relative=relative)
            if pairs is not None:  # [CLS] and the words are now where they looked
                looked = weights[:, :, :nt + 1, nt + 1:].float().mean(1)
                where = torch.cat([looked / looked.sum(-1, keepdim=True).clamp_min(1e-12), objects], 1)
            if need_weights:
                to_image = weights[:, :, 1:nt + 1, nt + 1:]
                attentions[f"layer{i}.joint"] = weights
                attentions[f"layer{i}.text_to_image"] = to_image / to_image.sum(-1, keepdim=True).clamp_min(1e-12)
        x = self.norm(x)
        pooled = x[:, 0] if self.readout == "cls" else masked_mean(x[:, 1:nt + 1], text.mask)
        return FusionOutput(pooled, x, attentions)
