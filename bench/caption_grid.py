"""A grid of photos with the captions a model wrote for them and one human reference each.

    python -m bench.caption_grid RUN/eval_captions.jsonl --count 8 --out docs/captioning_flickr8k_val.png

Reads the per-image records `vlfuse train` / `vlfuse eval` write beside eval.json (image, caption,
references); picks `count` images spread evenly over the file (no choosing the good ones).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from vlfuse.plotting import pyplot, save_figure
from vlfuse.report import _draw_image, _wrap


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def spread(records: list[dict], count: int) -> list[dict]:
    """`count` records at even steps through the file: a fixed, unpicked sample."""
    step = max(1, len(records) // count)
    return records[::step][:count]


def plot_caption_grid(records: list[dict], out_png: Path, columns: int = 4) -> Path:
    rows = math.ceil(len(records) / columns)
    with pyplot() as plt:
        fig = plt.figure(figsize=(3.4 * columns, 4.4 * rows))
        grid = fig.add_gridspec(2 * rows, columns, height_ratios=[2.4, 1.5] * rows, hspace=0.08, wspace=0.12)
        for i, record in enumerate(records):
            r, c = divmod(i, columns)
            _draw_image(fig.add_subplot(grid[2 * r, c]), record["image"])
            ax = fig.add_subplot(grid[2 * r + 1, c])
            ax.axis("off")
            generated = "\n".join(_wrap(record["caption"], 34, 3))
            reference = "\n".join(_wrap(record["references"][0], 34, 3))
            ax.text(0.0, 0.98, generated, ha="left", va="top", fontsize=9, fontweight="bold",
                    transform=ax.transAxes, linespacing=1.25)
            ax.text(0.0, 0.45, f"human: {reference}" if reference else "", ha="left", va="top", fontsize=8,
                    color="#555555", transform=ax.transAxes, linespacing=1.25)
        return save_figure(fig, out_png)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("captions", type=Path, help="eval_captions.jsonl of a captioning evaluation")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("docs/captioning_flickr8k_val.png"))
    args = parser.parse_args()
    print(plot_caption_grid(spread(read_records(args.captions), args.count), args.out))


if __name__ == "__main__":
    main()
