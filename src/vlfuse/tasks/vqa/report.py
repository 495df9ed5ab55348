"""How task vqa's metrics print: accuracy overall, per group and per question family."""

from __future__ import annotations

from ..base import render


def format_vqa_metrics(metrics: dict) -> str:
    from rich.table import Table

    table = Table(title="Accuracy")
    for col in ("", "accuracy %", "questions"):
        table.add_column(col)
    rows = [("overall", metrics["overall"])] + list(metrics.get("groups", {}).items()) + \
        [(f"  {k}", v) for k, v in metrics["families"].items()]
    for name, m in rows:
        table.add_row(name, f"{100 * m['accuracy']:.2f}", str(m["count"]))
    lines = [render(table)]
    if metrics.get("vqa_accuracy"):
        official = metrics["vqa_accuracy"]
        lines.append(f"VQA accuracy (official, {official['count']} questions with human answers): "
                     f"{100 * official['accuracy']:.2f}% — " + ", ".join(
                         f"{t} {100 * a:.2f}%" for t, a in official["per_answer_type"].items()))
    if metrics.get("unanswerable"):
        lines.append(f"{metrics['unanswerable']} questions have an answer that is not among the model's answers "
                     "(counted wrong)")
    return "\n".join(lines)
