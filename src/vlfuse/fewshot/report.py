"""The few-shot result as a few lines for the terminal (and a markdown table for the docs)."""

from __future__ import annotations


def _cell(stats: dict) -> str:
    return f"{100 * stats['mean']:.1f} ± {100 * stats['sd']:.1f}"


def format_fewshot(result: dict) -> str:
    """Accuracy (%) per method and k, mean ± sd over the seeds, with the baselines."""
    shots = [str(k) for k in result["shots"]]
    width = max(len(m) for m in result["curve"]) + 2
    lines = [f"few-shot: {len(result['answers'])} new answers ({', '.join(result['answers'])}), "
             f"{result['query_questions']} {result['query_split']} questions, {result['seeds']} seeds",
             f"{'k':<{width}}" + "".join(f"{k:>14}" for k in shots)]
    for method, by_k in result["curve"].items():
        lines.append(f"{method:<{width}}" + "".join(f"{_cell(by_k[k]):>14}" for k in shots))
    if result.get("ceiling"):
        lines.append(f"linear probe on all {result['ceiling']['examples']} support questions: "
                     f"{100 * result['ceiling']['accuracy']:.1f}%")
    majority = result["majority"]
    lines.append(f"chance {100 * result['chance']:.1f}%, always {majority['answer']!r} "
                 f"{100 * majority['accuracy']:.1f}%  ({result['seconds']:.1f} s)")
    return "\n".join(lines)


def markdown_table(result: dict) -> str:
    """| method | k=1 | k=5 | ... | with accuracy as mean ± sd (%)."""
    shots = [str(k) for k in result["shots"]]
    lines = ["| method | " + " | ".join(f"k = {k}" for k in shots) + " |",
             "|---|" + "---:|" * len(shots)]
    lines += [f"| {method} | " + " | ".join(_cell(by_k[k]) for k in shots) + " |"
              for method, by_k in result["curve"].items()]
    return "\n".join(lines)
