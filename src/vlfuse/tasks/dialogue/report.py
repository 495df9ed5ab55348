"""How task dialogue's metrics print: MRR, R@K and mean rank, overall and per question family."""

from __future__ import annotations

from ..base import render


def format_dialogue_metrics(metrics: dict) -> str:
    from rich.table import Table

    ks = [k for k in (1, 5, 10) if f"r{k}" in metrics]
    table = Table(title=f"Dialogue: {metrics['dialogs']} dialogues, {metrics['rounds']} rounds, "
                        f"{'/'.join(map(str, metrics['candidates']))} candidates each")
    for col in ("", "MRR", *(f"R@{k} %" for k in ks), "mean rank", "rounds"):
        table.add_column(col, no_wrap=True)
    for name, m in [("overall", metrics), *((f"  {f}", m) for f, m in metrics["families"].items())]:
        table.add_row(name, f"{m['mrr']:.4f}", *(f"{100 * m.get(f'r{k}', float('nan')):.2f}" for k in ks),
                      f"{m['mean_rank']:.2f}", str(m["rounds"]))
    return render(table)
