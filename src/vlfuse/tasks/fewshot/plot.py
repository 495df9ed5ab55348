"""The learning curve as a figure: k vs accuracy, a line per method with its mean ± sd band."""

from __future__ import annotations

from pathlib import Path


def plot_curve(result: dict, path: str | Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here
    import matplotlib.pyplot as plt

    shots = result["shots"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
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
    ax.set_title(title or f"{len(result['answers'])} new answers, mean ± sd over {result['seeds']} seeds",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
