"""How task generation's metrics print."""

from __future__ import annotations


def _row(name: str, s: dict) -> str:
    return (f"{name:<22} recall {s['recall']:6.1%}  precision {s['precision']:6.1%}  colour {s['color_present']:6.1%}  "
            f"shape {s['shape_right']:6.1%}  place {s['place_right']:6.1%}  images exact {s['images_exact']:6.1%}")


def format_generation_metrics(metrics: dict) -> str:
    """Faithfulness of the generated images (and the VQ-VAE's ceiling), then retrieval R@1 if measured."""
    lines = [f"generation, {metrics['split']} split: {metrics['generated']['images']} captions, "
             f"{metrics['generated']['objects_named']} named objects (temperature {metrics['temperature']}, "
             f"top-k {metrics['top_k']}, guidance {metrics.get('guidance', 1.0)}, seed {metrics['seed']}"
             + (f"; best of {metrics['candidates']} by {metrics['ranker']}" if metrics.get("candidates", 1) > 1 else "")
             + ")",
             _row("generated images", metrics["generated"]),
             _row("VQ-VAE reconstructions", metrics["vq_reconstruction"])]
    if "retrieval" in metrics:
        r = metrics["retrieval"]
        lines.append(f"R@1 among {r['pool']} captions: generated {r['generated_r1']:.1%}, real images {r['real_r1']:.1%}"
                     + (" (the ranker judged too: not an independent test)" if r.get("judge_is_ranker") else ""))
    return "\n".join(lines)
