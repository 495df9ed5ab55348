"""The learning curve as a figure: k vs accuracy, a line per method with its mean ± sd band.

Several results side by side (one panel each, titled by the JSON file name):

    python -m vlfuse.fewshot.plot OUT.png RESULT.json [RESULT.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _panel(ax, result: dict, title: str) -> None:
    shots = result["shots"]
    for method, by_k in result["curve"].items():
        mean = [100 * by_k[str(k)]["mean"] for k in shots]
        sd = [100 * by_k[str(k)]["sd"] for k in shots]
        ax.plot(shots, mean, marker="o", label=method.replace("_", " "))
        ax.fill_between(shots, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)], alpha=0.2)
    if result.get("ceiling"):
        ax.axhline(100 * result["ceiling"]["accuracy"], color="black", linestyle="-.",
                   label=f"linear probe, all {result['ceiling']['examples']} examples")
    ax.axhline(100 * result["chance"], color="gray", linestyle=":", label="chance")
    ax.axhline(100 * result["majority"]["accuracy"], color="gray", linestyle="--", label="majority answer")
    ax.set_xscale("log")
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.set_xlabel("examples per new answer (k)")
    ax.set_ylabel("accuracy on the new answers (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def plot_curves(panels: dict[str, dict], path: str | Path) -> Path:
    """One panel per (title, result), in a row (up to 3) or rows of two, written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here
    import matplotlib.pyplot as plt

    columns = len(panels) if len(panels) <= 3 else 2
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.9 * rows), dpi=110, squeeze=False)
    for ax, (title, result) in zip(axes.flat, panels.items()):
        _panel(ax, result, title)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_curve(result: dict, path: str | Path, title: str | None = None) -> Path:
    title = title or (f"{len(result['answers'])} new answers ({', '.join(result['answers'])}),\n"
                      f"mean ± sd over {result['seeds']} seeds")
    return plot_curves({title: result}, path)


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: python -m vlfuse.fewshot.plot OUT.png RESULT.json [RESULT.json ...]")
    panels = {}
    for name in argv[1:]:
        result = json.loads(Path(name).read_text(encoding="utf-8"))
        panels[f"{Path(name).stem}: {len(result['answers'])} new answers ({', '.join(result['answers'])})"] = result
    print(plot_curves(panels, argv[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
