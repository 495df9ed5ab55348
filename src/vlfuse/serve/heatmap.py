"""An explanation's heatmap as a PNG for the web page: the image in grey, the map in colour over it."""

from __future__ import annotations

import base64
import io

import numpy as np

MIN_SIDE = 256  # small images (the built-in data is 64 px) are scaled up, pixels kept sharp
UNIFORM_SCALE = 4.0  # as in vlfuse.explain.plot: a flat map stays faint instead of full colour
ALPHA = 0.6


def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """image [H, W, 3] uint8, heatmap [H, W] (a distribution) -> [H, W, 3] uint8 overlay (jet colours)."""
    from matplotlib import colormaps

    relative = heatmap * heatmap.size  # 1 = the even spread
    scaled = np.clip(relative / max(float(relative.max()), UNIFORM_SCALE), 0, 1)
    colour = colormaps["jet"](scaled)[..., :3] * 255
    grey = np.repeat(image.astype(np.float32).mean(-1, keepdims=True), 3, -1)
    alpha = np.where(relative > 0, ALPHA, 0.0)[..., None]
    return (grey * (1 - alpha) + colour * alpha).round().clip(0, 255).astype(np.uint8)


def heatmap_png(image: np.ndarray, heatmap: np.ndarray, min_side: int = MIN_SIDE) -> bytes:
    from PIL import Image

    picture = Image.fromarray(heatmap_overlay(image, heatmap))
    scale = max(1, -(-min_side // min(picture.size)))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def heatmap_png_base64(image: np.ndarray, heatmap: np.ndarray) -> str:
    return base64.b64encode(heatmap_png(image, heatmap)).decode("ascii")
