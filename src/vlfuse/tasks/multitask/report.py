"""How task multitask's metrics print: each member's own table under its name."""

from __future__ import annotations

from collections.abc import Mapping

from ..base import Task


def format_multitask_metrics(metrics: dict, *, members: Mapping[str, Task]) -> str:
    parts = []
    for name, member in metrics["tasks"].items():
        parts.append(f"== {name} ({metrics['splits'][name]} split) ==\n{members[name].format_metrics(member)}")
    return "\n\n".join(parts)
