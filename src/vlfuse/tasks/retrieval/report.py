"""How task retrieval's metrics print: Recall@K and median / mean rank, each direction, each stage
(the embeddings, then the query bank's normalisation and the re-ranking when the run has them)."""

from __future__ import annotations

from ..base import render


def format_retrieval_metrics(metrics: dict) -> str:
    from rich.table import Table

    ks = metrics["ks"]
    table = Table(title=f"Retrieval: {metrics['images']} images, {metrics['captions']} captions")
    for col in ("stage", "direction", *(f"R@{k} %" for k in ks), "median rank", "mean rank"):
        table.add_column(col, no_wrap=True)
    stages = [("embeddings", metrics["first_stage"])]
    if metrics.get("querybank"):
        stages.append(("query bank", metrics["querybank"]))  # its beta: eval.json
    if metrics.get("reranked"):
        stages.append((f"re-ranked@{metrics['rerank_k']}", metrics["reranked"]))
    for stage, m in stages:
        for d, name in (("i2t", "image→text"), ("t2i", "text→image")):
            table.add_row(stage, name, *(f"{100 * m[f'{d}_r{k}']:.1f}" for k in ks), f"{m[f'{d}_median_rank']:g}",
                          f"{m[f'{d}_mean_rank']:.1f}")
    return render(table)
