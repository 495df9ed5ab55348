"""A small convolutional image encoder that returns grid tokens."""

from __future__ import annotations

import torch
from torch import nn

from ..layers.transformer import TransformerBlock
from ..types import Features, grid_boxes


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """ResNet's basic block (He et al., 2016): relu(x + BN(conv(relu(BN(conv(x))))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class CNNImageEncoder(nn.Module):
    """ResNet-style CNN -> G x G grid tokens (+ position embeddings) -> optional transformer layers.

    Each entry of `channels` is a stage: a stride-2 conv (halving the grid) then `residual_blocks`
    residual basic blocks.

    With `coord=True` two coordinate channels are appended to the input (CoordConv, Liu et al.
    2018), as the Relation Networks paper does for its CNN, so tokens know where they are.
    `layers` transformer blocks over the grid run once per image, however many questions it has.
    Input: float images [B, 3, H, W] in [0, 1]. Output: Features with G*G tokens, all real.
    """

    def __init__(self, dim: int = 128, channels: list[int] = (32, 64, 128), image_size: int = 64,
                 coord: bool = True, layers: int = 0, heads: int = 4, dropout: float = 0.0,
                 residual_blocks: int = 1):
        super().__init__()
        self.coord = coord
        chans = [3 + 2 * coord, *channels]
        stages = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            stages += [_conv(cin, cout, 2), *(ResidualBlock(cout) for _ in range(residual_blocks))]
        self.cnn = nn.Sequential(*stages, nn.Conv2d(chans[-1], dim, 1))
        self.grid, self.image_size = image_size // 2 ** len(channels), image_size
        if self.grid < 1:
            raise ValueError(f"image_size {image_size} is too small for {len(channels)} stride-2 stages")
        self.row_embed = nn.Parameter(torch.zeros(self.grid, dim))
        self.col_embed = nn.Parameter(torch.zeros(self.grid, dim))
        nn.init.normal_(self.row_embed, std=0.02)
        nn.init.normal_(self.col_embed, std=0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, dropout=dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, images: torch.Tensor) -> Features:
        x = (images - 0.5) / 0.25
        if self.coord:
            b, _, h, w = x.shape
            ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
            xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
            x = torch.cat([x, xs, ys], 1)
        grid = self.cnn(x)
        if grid.shape[-2:] != (self.grid, self.grid):
            raise ValueError(f"expected images of {self.image_size} px, got {tuple(images.shape[-2:])}")
        tokens = grid.flatten(2).transpose(1, 2)
        pos = (self.row_embed[:, None, :] + self.col_embed[None, :, :]).reshape(-1, tokens.shape[-1])
        tokens = tokens + pos
        for block in self.blocks:
            tokens, _ = block(tokens)
        tokens = self.norm(tokens)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return Features(tokens, mask, tokens.mean(1), grid_boxes(self.grid, self.grid, tokens.shape[0], tokens.device))
