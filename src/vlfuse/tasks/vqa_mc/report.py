"""How task vqa_mc's metrics print: accuracy against chance, then per question type."""

from __future__ import annotations


def format_vqa_mc_metrics(metrics: dict) -> str:
    def pct(x: float) -> str:
        return f"{100 * x:.2f}%"

    widths = "/".join(map(str, metrics.get("choices", []))) or "0"
    lines = [f"multiple-choice VQA: {metrics['questions']} questions, {widths} candidates each",
             f"  accuracy   {pct(metrics['accuracy'])}   (chance {pct(metrics['chance'])})"]
    if metrics.get("vqa_accuracy"):
        official = metrics["vqa_accuracy"]
        lines.append(f"  VQA accuracy of the chosen answers {pct(official['accuracy'])} "
                     f"({official['count']} questions with human answers)")
    rows = list(metrics.get("groups", {}).items()) + [(f"  {k}", v) for k, v in metrics.get("families", {}).items()]
    if len(metrics.get("families", {})) > 1:
        lines += [f"  {name:16} {pct(m['accuracy'])} of {m['count']}" for name, m in rows]
    for key, what in (("unlabelled", "questions without an answer (scored, not counted)"),
                      ("without_choices", "questions with neither candidates nor an answer (left out)")):
        if metrics.get(key):
            lines.append(f"  {metrics[key]} {what}")
    if metrics.get("skipped", {}).get("count"):
        lines.append(f"skipped {metrics['skipped']['count']} bad samples: " + "; ".join(metrics["skipped"]["reasons"]))
    return "\n".join(lines)
