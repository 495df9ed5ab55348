"""How the metrics of tasks matching and classification print."""

from __future__ import annotations


def format_labelled_metrics(metrics: dict) -> str:
    """The metrics as a few lines for the terminal."""
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.2f}%"

    base = metrics["majority_baseline"]
    lines = [f"{metrics['task']}: {metrics['examples']} examples, classes {', '.join(metrics['classes'])}",
             f"  accuracy   {pct(metrics['accuracy'])}   (majority class '{base['class']}': {pct(base['accuracy'])})",
             f"  macro-F1   {pct(metrics['macro_f1'])}",
             *(f"  class {c!r:12} {pct(m['accuracy'])} of {m['count']}"
               for c, m in metrics.get("per_class", {}).items()),
             f"  AUROC      {pct(metrics['auroc'])}" + (f"  ({metrics['auroc_undefined']})"
                                                         if metrics.get("auroc_undefined") else "")]
    if "consistency" in metrics:
        lines.append(f"  consistency {pct(metrics['consistency'])} of {metrics['sentences']} sentences   "
                     f"(majority class: {pct(base['consistency'])})")
    if len(metrics.get("families", {})) > 1:
        lines += [f"  {kind:12} {pct(m['accuracy'])} of {m['count']}" for kind, m in metrics["families"].items()]
    if metrics.get("skipped", {}).get("count"):
        lines.append(f"skipped {metrics['skipped']['count']} bad samples: " + "; ".join(metrics["skipped"]["reasons"]))
    return "\n".join(lines)
