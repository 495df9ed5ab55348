"""How task captioning's metrics print: BLEU-1..4, ROUGE-L and CIDEr-D (x100, as papers report them)."""

from __future__ import annotations

from ..base import render


def format_caption_metrics(metrics: dict) -> str:
    from rich.table import Table

    d = metrics["decoding"]
    table = Table(title=f"Captioning ({metrics.get('split', 'test')}): {metrics['images']} images, "
                        f"{metrics['references']} reference captions "
                        f"(beam {d['beam_size']}, length penalty {d['length_penalty']:g})")
    names = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d")
    for header in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"):
        table.add_column(header)
    table.add_row(*(f"{100 * metrics[name]:.1f}" for name in names))
    return render(table)
