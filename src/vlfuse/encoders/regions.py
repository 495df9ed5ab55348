"""Region (object) tokens: one token per object found in the image, like detector region features.

The VQA models of the field (bottom-up attention, ViLBERT, LXMERT, UNITER) read a few dozen
object regions rather than a grid. Without a pretrained detector, `find_regions` proposes regions
the simple way that works for rendered scenes and plain-background photos of objects: pixels that
differ from the background colour, grouped into connected components. Each region becomes a token
from a small CNN over its crop, its box geometry and its mean colour.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.geometry import pair_features_dim, pair_geometry
from ..layers.transformer import TransformerBlock
from ..types import Features, masked_mean


@dataclass
class Regions:
    """Up to K regions per image. boxes: [B, K, 4] (x0, y0, x1, y1) in [0, 1]; centroids: [B, K, 2]
    (x, y) in [0, 1]; colors: [B, K, 3] mean colour in [0, 1]; areas: [B, K] fraction of the image;
    mask: [B, K] True where real."""

    boxes: torch.Tensor
    centroids: torch.Tensor
    colors: torch.Tensor
    areas: torch.Tensor
    mask: torch.Tensor

    def packed(self) -> torch.Tensor:
        """[B, K, 11]: every field side by side (the mask as 0/1), the form RegionCache stores."""
        return torch.cat([self.boxes, self.centroids, self.colors, self.areas[..., None],
                          self.mask[..., None].to(self.boxes.dtype)], -1)

    @staticmethod
    def unpack(packed: torch.Tensor) -> Regions:
        return Regions(packed[..., :4], packed[..., 4:6], packed[..., 6:9], packed[..., 9], packed[..., 10] > 0.5)


class RegionCache:
    """find_regions' answer per image, keyed by a digest of its pixels.

    Proposals depend on the pixels alone, so an image seen again (every training epoch after the
    first) skips the connected-component search, whose cost grows with pixels x side (about 2% of
    the demo model's training step at 64x64, more on larger images). Holds at most `capacity` images (about 0.5 KB
    each); once full it keeps what it has, the best policy for data read in a random order.
    """

    def __init__(self, capacity: int):
        self.capacity, self.rows = capacity, {}

    def __call__(self, images: torch.Tensor, propose) -> Regions:
        """Regions of images [B, 3, H, W]; propose(images) computes those not yet stored."""
        keys = [hashlib.blake2b(image.contiguous().view(torch.uint8).numpy().tobytes(), digest_size=16).digest()
                for image in images.detach().cpu()]  # the raw bytes, so any dtype hashes
        new_keys = [key for key in dict.fromkeys(keys) if key not in self.rows]
        fresh = {}
        if new_keys:
            found = propose(images[[keys.index(key) for key in new_keys]]).packed().cpu()
            fresh = {key: row.clone() for key, row in zip(new_keys, found)}
            for key in new_keys[: max(0, self.capacity - len(self.rows))]:
                self.rows[key] = fresh[key]
        packed = torch.stack([fresh[key] if key in fresh else self.rows[key] for key in keys])
        return Regions.unpack(packed.to(images.device, images.dtype))


def _label_components(foreground: torch.Tensor, max_iterations: int) -> torch.Tensor:
    """4-connected components of a [B, H, W] bool map: each pixel gets its component's largest
    pixel number (1-based), background 0. Labels spread one pixel per iteration until stable."""
    b, h, w = foreground.shape
    labels = torch.arange(1, h * w + 1, device=foreground.device, dtype=torch.float32).view(1, h, w)
    labels = labels.expand(b, h, w) * foreground
    for _ in range(max_iterations):
        padded = F.pad(labels, (1, 1, 1, 1))
        spread = torch.stack([labels, padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2],
                              padded[:, 1:-1, 2:]]).amax(0) * foreground
        if torch.equal(spread, labels):
            break
        labels = spread
    return labels.long()


@torch.no_grad()
def find_regions(images: torch.Tensor, max_regions: int = 10, threshold: float = 0.25,
                 min_area: int = 4) -> Regions:
    """Foreground components of images [B, 3, H, W] in [0, 1], largest first.

    The background colour is the median of the border pixels; a pixel is foreground when a channel
    differs from it by more than `threshold` (anti-aliased fringes stay background).
    """
    b, _, h, w = images.shape
    border = torch.cat([images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], -1)
    background = border.median(-1).values
    foreground = (images - background[:, :, None, None]).abs().amax(1) > threshold
    labels = _label_components(foreground, max_iterations=h + w).flatten(1)
    ys = torch.arange(h, device=images.device).repeat_interleave(w).float()
    xs = torch.arange(w, device=images.device).repeat(h).float()
    pixels = images.flatten(2).transpose(1, 2)
    boxes = images.new_zeros(b, max_regions, 4)
    centroids = images.new_zeros(b, max_regions, 2)
    colors = images.new_zeros(b, max_regions, 3)
    areas = images.new_zeros(b, max_regions)
    mask = torch.zeros(b, max_regions, dtype=torch.bool, device=images.device)
    for i in range(b):
        ids, inverse = torch.unique(labels[i], return_inverse=True)
        n = len(ids)
        count = torch.zeros(n, device=images.device).index_add_(0, inverse, torch.ones_like(xs))
        keep = (ids > 0) & (count >= min_area)
        order = [j for j in count.argsort(descending=True).tolist() if keep[j]][:max_regions]
        if not order:  # nothing stands out: the whole image is the one region (attention needs a key)
            boxes[i, 0] = torch.tensor([0.0, 0.0, 1.0, 1.0])
            centroids[i, 0] = 0.5
            colors[i, 0], areas[i, 0], mask[i, 0] = images[i].mean((1, 2)), 1.0, True
            continue

        def reduce(values: torch.Tensor, how: str) -> torch.Tensor:
            return values.new_full((n,), float("inf") if how == "amin" else -float("inf")).scatter_reduce(
                0, inverse, values, how)

        sel = torch.tensor(order, device=images.device)
        box = torch.stack([reduce(xs, "amin"), reduce(ys, "amin"), reduce(xs, "amax") + 1,
                           reduce(ys, "amax") + 1], -1)[sel]
        boxes[i, : len(order)] = box / torch.tensor([w, h, w, h], device=images.device, dtype=box.dtype)
        centre_sum = torch.zeros(n, 2, device=images.device).index_add_(0, inverse, torch.stack([xs, ys], -1))
        centroids[i, : len(order)] = ((centre_sum / count[:, None] + 0.5) / torch.tensor([w, h], device=images.device))[sel]
        color_sum = torch.zeros(n, 3, device=images.device).index_add_(0, inverse, pixels[i])
        colors[i, : len(order)] = (color_sum / count[:, None])[sel]
        areas[i, : len(order)] = count[sel] / (h * w)
        mask[i, : len(order)] = True
    return Regions(boxes, centroids, colors, areas, mask)


def crop_regions(images: torch.Tensor, boxes: torch.Tensor, size: int, pad: float = 0.02) -> torch.Tensor:
    """Bilinear crops [B, K, 3, size, size] of the boxes (slightly enlarged), a soft RoIAlign."""
    b, k, _ = boxes.shape
    x0, y0, x1, y1 = (boxes[..., j] for j in range(4))
    x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
    steps = torch.linspace(0, 1, size, device=images.device, dtype=images.dtype)
    gx = (x0[..., None] + (x1 - x0)[..., None] * steps) * 2 - 1  # [B, K, size] in grid_sample's [-1, 1]
    gy = (y0[..., None] + (y1 - y0)[..., None] * steps) * 2 - 1
    grid = torch.stack([gx[:, :, None, :].expand(b, k, size, size), gy[:, :, :, None].expand(b, k, size, size)], -1)
    crops = F.grid_sample(images, grid.view(b, k * size, size, 2), align_corners=False, padding_mode="border")
    return crops.view(b, 3, k, size, size).transpose(1, 2)


class RegionImageEncoder(nn.Module):
    """Tokens for up to `max_regions` objects: CNN(crop) + Linear(box geometry) + Linear(mean colour).

    `layers` transformer blocks over the regions then let each object see the others (which is
    nearest, which shares its shape) once per image, however many questions it has. With
    `geometry_bias`, each head adds a learned function of the pair's relative position to its
    attention scores (relation-aware geometric attention: Hu et al., CVPR 2018; Herdade et al.,
    NeurIPS 2019), so "which object is nearest" is one attention step rather than a computation
    the layers must rediscover from absolute positions.

    Input: images [B, 3, H, W] in [0, 1]. Output: Features [B, max_regions, dim] with mask True on
    real regions (an image may hold fewer); pooled is the mean of the real tokens.

    With `relative_geometry`, every pair's offset, distance and distance ranks
    (vlfuse.layers.geometry) join that pair's keys and values in the blocks, so each object can
    read what its nearest and furthest neighbours are.

    `cache_regions`: how many images' proposals to keep (RegionCache), 0 to search every time.
    """

    def __init__(self, dim: int = 128, max_regions: int = 10, crop_size: int = 16, channels: list[int] = (32, 64),
                 threshold: float = 0.25, min_area: int = 4, layers: int = 0, heads: int = 4,
                 geometry_bias: bool = False, relative_geometry: bool = False, cache_regions: int = 200_000):
        super().__init__()
        self.max_regions, self.crop_size, self.threshold, self.min_area = max_regions, crop_size, threshold, min_area
        self.region_cache = RegionCache(cache_regions) if cache_regions > 0 else None
        convs, cin = [], 3
        for cout in channels:
            convs += [nn.Conv2d(cin, cout, 3, 2, 1), nn.GELU()]
            cin = cout
        side = crop_size // 2 ** len(channels)
        self.crop_cnn = nn.Sequential(*convs, nn.Flatten(), nn.Linear(cin * side * side, dim))
        # geometry: box corners, centre, size, area and pixel centroid (box embeddings of UNITER / LXMERT),
        # plus sines of the centroid at several frequencies (as DETR encodes positions) so that
        # position varies the token as much as colour and shape do from the first step
        self.register_buffer("frequencies", 2.0 ** torch.arange(6) * torch.pi, persistent=False)
        self.geometry = nn.Sequential(nn.Linear(11 + 4 * len(self.frequencies), dim), nn.GELU(), nn.Linear(dim, dim))
        self.color = nn.Linear(3, dim)
        # each part normalised before the sum (as UNITER does for region and box), so none drowns another
        self.part_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.relative_geometry = relative_geometry
        relative_dim = pair_features_dim() if relative_geometry else 0
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, relative_dim=relative_dim) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.pair_bias = None
        if geometry_bias:
            # (dx, dy, distance, same object) -> one score per head; zero output at the start, so the
            # blocks begin as plain attention and learn how much geometry to use
            self.pair_bias = nn.Sequential(nn.Linear(4, 64), nn.GELU(), nn.Linear(64, heads))
            nn.init.zeros_(self.pair_bias[-1].weight)
            nn.init.zeros_(self.pair_bias[-1].bias)

    def forward(self, images: torch.Tensor) -> Features:
        regions = (self._propose(images) if self.region_cache is None else self.region_cache(images, self._propose))
        return self.encode_regions(images, regions)

    def encode_regions(self, images: torch.Tensor, regions: Regions) -> Features:
        """`forward` after the region proposal: the part that traces (vlfuse.export proposes regions in numpy)."""
        b, k = regions.mask.shape
        crops = crop_regions(images, regions.boxes, self.crop_size)
        appearance = self.crop_cnn((crops.flatten(0, 1) - 0.5) / 0.25).view(b, k, -1)
        box = regions.boxes
        centre, extent = (box[..., :2] + box[..., 2:]) / 2, box[..., 2:] - box[..., :2]
        angles = (regions.centroids[..., None] * self.frequencies).flatten(-2)
        geometry = torch.cat([torch.cat([box, centre, extent, regions.areas[..., None], regions.centroids], -1) * 2 - 1,
                              angles.sin(), angles.cos()], -1)
        parts = (appearance, self.geometry(geometry), self.color(regions.colors * 2 - 1))
        tokens = sum(norm(part) for norm, part in zip(self.part_norms, parts))
        bias = self._pair_bias(regions.centroids) if self.pair_bias is not None else None
        relative = pair_geometry(regions.boxes, regions.mask) if self.relative_geometry else None
        for block in self.blocks:
            tokens, _ = block(tokens, regions.mask, bias=bias, relative=relative)
        tokens = self.norm(tokens)
        tokens = tokens * regions.mask[..., None]
        return Features(tokens, regions.mask, masked_mean(tokens, regions.mask), regions.boxes)

    def _propose(self, images: torch.Tensor) -> Regions:
        return find_regions(images, self.max_regions, self.threshold, self.min_area)

    def _pair_bias(self, centroids: torch.Tensor) -> torch.Tensor:
        """Attention bias [B, heads, K, K] from each pair's offset (scaled so that neighbouring
        distances differ by about one unit)."""
        offset = (centroids[:, None, :, :] - centroids[:, :, None, :]) * 8
        distance = offset.norm(dim=-1, keepdim=True)
        same = torch.eye(centroids.shape[1], device=centroids.device, dtype=centroids.dtype)
        pairs = torch.cat([offset, distance, same.expand(centroids.shape[0], -1, -1)[..., None]], -1)
        return self.pair_bias(pairs).permute(0, 3, 1, 2)
