"""The explanation figure: the image, the heatmap over it, and one small map per word."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..plotting import pyplot, save_figure
from .api import Explanation

COLUMNS = 6
MAX_WORDS = 18
UNIFORM_SCALE = 4.0


def _overlay(ax, image: np.ndarray, heat: np.ndarray, title: str | None = None):
    # the image in grey, so the heatmap's colours are not confused with the scene's own
    ax.imshow(image.mean(-1), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)
    # in units of the even spread (1 = uniform), the scale reaching at least 4: a flat map stays
    # faint instead of being stretched to full colour; zero stays clear
    relative = heat * heat.size
    return ax.imshow(np.ma.masked_less_equal(relative, 0), cmap="jet", alpha=0.6, vmin=0,
                     vmax=max(float(relative.max()), UNIFORM_SCALE), interpolation="nearest")


def plot_explanation(result: Explanation, out_png: str | Path, max_words: int = MAX_WORDS) -> Path:
    words = [] if result.per_word is None else list(zip(result.tokens, result.per_word))[:max_words]
    columns = max(2, min(COLUMNS, len(words)))
    word_rows = math.ceil(len(words) / columns)
    with pyplot() as plt:
        height = 3.4 + 1.7 * word_rows + 0.9  # the last 0.9 inch for the two title lines
        fig = plt.figure(figsize=(max(1.7 * columns, 8.0), height))
        grid = fig.add_gridspec(1 + word_rows, columns, height_ratios=[2] + [1] * word_rows, top=1 - 0.9 / height)
        half = columns // 2
        image_ax = fig.add_subplot(grid[0, :half])
        image_ax.imshow(result.image, interpolation="nearest")
        image_ax.set_xticks([])
        image_ax.set_yticks([])
        image_ax.set_title("image", fontsize=10)
        overlay_ax = fig.add_subplot(grid[0, half:])
        empty = "" if result.heatmap.any() else "\nall zero: no image token raised the answer"
        shown = _overlay(overlay_ax, result.image, result.heatmap, f"{result.method} (whole question){empty}")
        fig.colorbar(shown, ax=overlay_ax, fraction=0.046, pad=0.04, label="x uniform")
        for i, (word, heat) in enumerate(words):
            _overlay(fig.add_subplot(grid[1 + i // columns, i % columns]), result.image, heat, word)
        fig.suptitle(f"{result.question}\nanswer: {result.answer} ({result.confidence:.0%})", fontsize=11)
        return save_figure(fig, out_png)
