"""The region encoder's proposal step in numpy, for exported models.

`vlfuse.encoders.regions.find_regions` groups pixels into connected components with a loop whose
length and outputs depend on the image (torch.unique, Python lists), which no ONNX graph can hold.
An exported region model runs this numpy twin of it, then the graph (crops, CNN, transformer,
fusion, head). It follows find_regions step by step, so both propose the same regions.
"""

from __future__ import annotations

import numpy as np

REGION_INPUTS = ("region_boxes", "region_centroids", "region_colors", "region_areas", "region_mask")


def _label_components(foreground: np.ndarray, max_iterations: int) -> np.ndarray:
    """4-connected components of a [B, H, W] bool map, labelled as find_regions labels them."""
    b, h, w = foreground.shape
    labels = np.arange(1, h * w + 1, dtype=np.float32).reshape(1, h, w) * foreground
    for _ in range(max_iterations):
        padded = np.pad(labels, ((0, 0), (1, 1), (1, 1)))
        spread = np.stack([labels, padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2],
                           padded[:, 1:-1, 2:]]).max(0) * foreground
        if np.array_equal(spread, labels):
            break
        labels = spread
    return labels.astype(np.int64)


def _one_image(image: np.ndarray, labels: np.ndarray, max_regions: int, min_area: int) -> list[tuple]:
    """(box, centroid, colour, area) of the largest components of one image [3, H, W], largest first."""
    _, h, w = image.shape
    ids, inverse = np.unique(labels, return_inverse=True)
    count = np.bincount(inverse, minlength=len(ids))
    order = [j for j in np.argsort(-count, kind="stable") if ids[j] > 0 and count[j] >= min_area][:max_regions]
    ys, xs = np.divmod(np.arange(h * w), w)
    pixels = image.reshape(3, -1)
    regions = []
    for j in order:
        inside = inverse == j
        x, y = xs[inside], ys[inside]
        box = np.array([x.min() / w, y.min() / h, (x.max() + 1) / w, (y.max() + 1) / h], np.float32)
        centroid = (np.array([x.sum(), y.sum()], np.float32) / count[j] + 0.5) / np.array([w, h], np.float32)
        colour = pixels[:, inside].sum(1, dtype=np.float32) / count[j]
        regions.append((box, centroid, colour, count[j] / (h * w)))
    if not regions:  # nothing stands out: the whole image is the one region (attention needs a key)
        regions.append((np.array([0, 0, 1, 1], np.float32), np.full(2, 0.5, np.float32), image.mean((1, 2)), 1.0))
    return regions


def find_regions(images: np.ndarray, max_regions: int = 10, threshold: float = 0.25,
                 min_area: int = 4) -> dict[str, np.ndarray]:
    """Regions of float images [B, 3, H, W] in [0, 1], as the exported graph's inputs (REGION_INPUTS)."""
    b, _, h, w = images.shape
    border = np.concatenate([images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], -1)
    background = np.sort(border, -1)[..., (border.shape[-1] - 1) // 2]  # torch.median: the lower middle value
    foreground = np.abs(images - background[:, :, None, None]).max(1) > threshold
    labels = _label_components(foreground, max_iterations=h + w).reshape(b, -1)
    out = {"region_boxes": np.zeros((b, max_regions, 4), np.float32),
           "region_centroids": np.zeros((b, max_regions, 2), np.float32),
           "region_colors": np.zeros((b, max_regions, 3), np.float32),
           "region_areas": np.zeros((b, max_regions), np.float32),
           "region_mask": np.zeros((b, max_regions), bool)}
    for i in range(b):
        for k, (box, centroid, colour, area) in enumerate(_one_image(images[i], labels[i], max_regions, min_area)):
            out["region_boxes"][i, k], out["region_centroids"][i, k] = box, centroid
            out["region_colors"][i, k], out["region_areas"][i, k], out["region_mask"][i, k] = colour, area, True
    return out
