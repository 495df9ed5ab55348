"""The explanation sanity figure: per fusion, how much of each heatmap lands on the object a
question names, against that object's share of the image (`vlfuse explain-sanity` for every model).

    python -m bench.explain_figure runs/compare --seed 0 --limit 200 --out docs/explain_sanity.png

Reads OUT/<fusion>/seed<k>/model (the layout `vlfuse compare` writes); attention and rollout (for
fusions that have attention maps), Grad-CAM, saliency and occlusion (for every fusion); writes the
PNG and a JSON beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vlfuse.explain.base import ExplainError
from vlfuse.explain.sanity import explain_sanity

METHODS = ("attention", "rollout", "gradcam", "saliency", "occlusion")


def collect(compare_dir: Path, seed: int, limit: int) -> dict[str, dict[str, dict]]:
    results: dict[str, dict[str, dict]] = {}
    for model_dir in sorted(compare_dir.glob(f"*/seed{seed}/model")):
        fusion = model_dir.parent.parent.name
        for method in METHODS:
            try:
                report = explain_sanity(model_dir, None, "test", limit, method)
            except ExplainError as error:  # no attention maps (pooled fusions): the gradient and occlusion maps
                print(f"  {fusion} {method}: {error}", file=sys.stderr)
                continue
            results.setdefault(fusion, {})[method] = report["overall"]
            o = report["overall"]
            print(f"  {fusion:22} {method:9} on object {o['object_mass']:.3f} vs area {o['object_area']:.3f} "
                  f"(x{o['object_lift']:.1f}), accuracy {o['correct']:.2f}", file=sys.stderr)
    return results


def plot(results: dict[str, dict[str, dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fusions = sorted(results, key=lambda f: -max(r["object_mass"] for r in results[f].values()))
    x = np.arange(len(fusions))
    fig, ax = plt.subplots(figsize=(max(5, len(fusions) * 0.9) + 3.5, 4.5))
    width = 0.8 / len(METHODS)
    for i, method in enumerate(METHODS):
        mass = [results[f][method]["object_mass"] if method in results[f] else np.nan for f in fusions]
        ax.bar(x + (i - (len(METHODS) - 1) / 2) * width, mass, width, label=f"{method}: share of the map on the object")
    area = [np.mean([r["object_area"] for r in results[f].values()]) for f in fusions]
    ax.scatter(x, area, color="black", marker="_", s=600, zorder=3, label="the object's share of the image")
    # the chance level of the token layout: a map that weighs every image token alike (region tokens
    # hug the objects, so this is far above the object's area)
    uniform = [np.mean([r["uniform_mass"] for r in results[f].values()]) for f in fusions]
    ax.scatter(x, uniform, color="gray", marker="x", zorder=3, label="a map even over the image tokens")
    ax.set_xticks(x, fusions, rotation=35, ha="right")
    ax.set_ylabel("share of heatmap mass")
    ax.set_ylim(0, 1)
    ax.set_title("Where the maps fall, one-object test questions (shape / left / top)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)  # beside the bars, never over them
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("compare_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("docs/explain_sanity.png"))
    args = parser.parse_args()
    results = collect(args.compare_dir, args.seed, args.limit)
    if not results:
        raise SystemExit(f"no models under {args.compare_dir}/*/seed{args.seed}/model")
    plot(results, args.out)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
