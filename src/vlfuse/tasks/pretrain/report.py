"""How task pretrain's metrics print: each objective's loss and accuracy."""

from __future__ import annotations

from ..base import render


def format_pretrain_metrics(metrics: dict) -> str:
    from rich.table import Table

    table = Table(title=f"Pre-training objectives ({metrics['split']}, {metrics['images']} images)")
    table.add_column("")
    table.add_column("value")
    for name, value in metrics.items():
        if isinstance(value, float):
            table.add_row(name, f"{value:.4f}")
    return render(table)
