"""How task multitask's metrics print: each member's own table under its name."""

from __future__ import annotations


def format_multitask_metrics(metrics: dict) -> str:
    from .. import TASKS

    parts = []
    for name, member in metrics["tasks"].items():
        parts.append(f"== {name} ({metrics['splits'][name]} split) ==\n{TASKS[name].format_metrics(member)}")
    return "\n\n".join(parts)
