"""A small Vision Transformer (Dosovitskiy et al., 2021) trained from scratch."""

from __future__ import annotations

import torch
from torch import nn

from ..layers.transformer import TransformerBlock
from ..types import Features, grid_boxes


class ViTImageEncoder(nn.Module):
    """Patches (a strided conv) + a CLS token + learned positions -> pre-norm transformer blocks.

    Input: float images [B, 3, image_size, image_size] in [0, 1]. Output: Features whose tokens are
    the (image_size / patch_size)^2 patch states (all real, with their grid boxes) and whose pooled
    vector is the CLS state. The CLS token is kept out of `tokens` so that every token has a place
    in the image, as fusions that read boxes expect.
    """

    def __init__(self, dim: int = 128, image_size: int = 64, patch_size: int = 8, layers: int = 2, heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        if patch_size < 1 or image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}: "
                             f"choose a patch_size that divides it")
        self.image_size, self.grid = image_size, image_size // patch_size
        self.patch_embed = nn.Conv2d(3, dim, patch_size, stride=patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 1 + self.grid ** 2, dim))
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, images: torch.Tensor) -> Features:
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected images of {self.image_size} px, got {tuple(images.shape[-2:])}")
        x = self.patch_embed((images - 0.5) / 0.25).flatten(2).transpose(1, 2)  # [B, G*G, D], row-major
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1)
        x = self.drop(x + self.pos)
        for block in self.blocks:
            x, _ = block(x)
        x = self.norm(x)
        tokens = x[:, 1:]
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return Features(tokens, mask, x[:, 0], grid_boxes(self.grid, self.grid, len(x), x.device))
