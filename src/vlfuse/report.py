"""Markdown report written by ``vlfuse demo`` and ``vlfuse eval --report``.

The report is a ``report.md`` plus three PNGs next to it (training curve,
per-family accuracy, example predictions), linked by relative path so the
folder can be moved or zipped as a whole.

matplotlib is imported inside the plotting functions only: ``import vlfuse``
must stay light, and the CLI only pays for matplotlib when it writes a report.
"""

from __future__ import annotations

import csv
import math
import re
import unicodedata
from pathlib import Path

from .plotting import pyplot, save_figure

__all__ = ["plot_training_curve", "plot_family_accuracy", "plot_examples", "write_report"]

CURVE_PNG = "training_curve.png"
FAMILY_PNG = "family_accuracy.png"
EXAMPLES_PNG = "examples.png"

# Lightning names a metric "<name>_step" when it is logged with on_step and on_epoch both set.
_COLUMNS = {
    "train_loss": ("train_loss", "train_loss_step"),
    "train_acc": ("train_acc", "train_acc_step"),
    "val_loss": ("val_loss",),
    "val_acc": ("val_acc",),
}
_GREEN, _RED, _BLACK = "#1a7f37", "#cf222e", "#222222"
_NUMERIC_COLUMNS = {"Accuracy (%)", "Count"}


# --------------------------------------------------------------------------- training curve


def _read_metrics_csv(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Series ``name -> [(step, value), ...]`` from a Lightning CSVLogger file.

    Lightning writes train and val metrics on separate rows and leaves the other
    cells empty, so every column is read independently, skipping blank cells.
    """
    series: dict[str, list[tuple[float, float]]] = {k: [] for k in _COLUMNS}
    with open(path, newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            step = _float(row.get("step"))
            step = float(i) if step is None else step
            for key, names in _COLUMNS.items():
                value = next((v for n in names if (v := _float(row.get(n))) is not None), None)
                if value is not None:
                    series[key].append((step, value))
    return series


def _float(cell: str | None) -> float | None:
    try:
        value = float(cell)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _smooth(values: list[float]) -> list[float]:
    """Debiased EMA (as TensorBoard does); stronger for longer runs."""
    beta = min(0.95, max(0.0, 1.0 - 10.0 / len(values)))
    out, acc = [], 0.0
    for i, v in enumerate(values, start=1):
        acc = beta * acc + (1.0 - beta) * v
        out.append(acc / (1.0 - beta**i))
    return out


def plot_training_curve(metrics_csv: Path, out_png: Path) -> Path | None:
    """Loss (left panel) and accuracy (right panel) against step.

    Returns None, writing nothing, when the CSV is missing, unreadable or has no
    usable values.
    """
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        return None
    try:
        series = _read_metrics_csv(metrics_csv)
    except (OSError, csv.Error, UnicodeDecodeError):
        return None
    has_loss = bool(series["train_loss"] or series["val_loss"])
    has_acc = bool(series["train_acc"] or series["val_acc"])
    if not (has_loss or has_acc):
        return None

    with pyplot() as plt:
        ncols = int(has_loss) + int(has_acc)
        fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 3.8), squeeze=False, sharex=True)
        panels = iter(axes[0])
        if has_loss:
            _plot_panel(next(panels), series["train_loss"], series["val_loss"], "loss")
        if has_acc:
            _plot_panel(next(panels), series["train_acc"], series["val_acc"], "accuracy")
        fig.tight_layout()
        return save_figure(fig, out_png)


def _plot_panel(ax, train: list[tuple[float, float]], val: list[tuple[float, float]], what: str) -> None:
    """Raw train values faintly, their smoothed trend boldly, val points on top."""
    if train:
        steps, values = zip(*train)
        if len(values) >= 5:  # noisy enough to need a trend line; raw values fade behind it
            ax.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=1, label=f"train {what}")
            ax.plot(steps, _smooth(list(values)), color="tab:blue", linewidth=2, label="train (smoothed)")
        else:  # too few points to smooth: show them plainly, markers so one point is visible
            ax.plot(steps, values, color="tab:blue", marker=".", linewidth=1.5, label=f"train {what}")
    if val:
        steps, values = zip(*val)
        ax.plot(steps, values, color="tab:orange", marker="o", markersize=4, linewidth=1.5, label=f"val {what}")
    if what == "accuracy":
        from matplotlib.ticker import PercentFormatter

        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_xlabel("step")
    ax.set_ylabel(what)
    ax.set_title(what.capitalize())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)


# --------------------------------------------------------------------------- family accuracy


def _bars(metrics: dict) -> list[tuple[str, float, str | None]]:
    """``(label, accuracy, group)`` rows: families if any, else groups, else overall."""
    families = metrics.get("families") or {}
    if families:
        rows = [(name, f.get("accuracy"), f.get("group")) for name, f in families.items()]
        # Group families together, keeping the group order of metrics["groups"].
        order = {g: i for i, g in enumerate(metrics.get("groups") or {})}
        # Stable sort: families keep the evaluator's order within their group.
        rows.sort(key=lambda r: (order.get(r[2], len(order)), str(r[2] or "")))
    elif metrics.get("groups"):
        rows = [(name, g.get("accuracy"), None) for name, g in metrics["groups"].items()]
    else:
        rows = [("overall", (metrics.get("overall") or {}).get("accuracy"), None)]
    return [(str(name), acc, group) for name, acc, group in rows if _is_number(acc)]


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def plot_family_accuracy(metrics: dict, out_png: Path) -> Path:
    """Horizontal bars per family (coloured by group) with the overall accuracy as a line."""
    rows = _bars(metrics)
    groups = list(dict.fromkeys(g for _, _, g in rows if g))
    group_stats = metrics.get("groups") or {}
    overall = (metrics.get("overall") or {}).get("accuracy")

    with pyplot() as plt:
        palette = plt.get_cmap("tab10").colors
        colour = {g: palette[i % len(palette)] for i, g in enumerate(groups)}
        fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.34 * max(len(rows), 1)))
        ys = range(len(rows))[::-1]  # first row on top
        accs = [acc for _, acc, _ in rows]
        ax.barh(list(ys), accs, color=[colour.get(g, "tab:blue") for _, _, g in rows], height=0.7)
        for y, acc in zip(ys, accs):
            ax.text(min(acc, 1.0) + 0.01, y, f"{100 * acc:.1f}%", va="center", fontsize=8)
        ax.set_yticks(list(ys), [label for label, _, _ in rows], fontsize=9)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlim(0, 1.12)  # room for the value labels right of a 100% bar
        from matplotlib.ticker import PercentFormatter

        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
        ax.set_xlabel("accuracy")
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
        handles = [plt.Rectangle((0, 0), 1, 1, color=colour[g]) for g in groups]
        labels = [_group_label(g, group_stats.get(g)) for g in groups]
        if _is_number(overall):
            handles.append(ax.axvline(overall, color="black", linestyle="--", linewidth=1))
            labels.append(f"overall ({100 * overall:.1f}%)")
        if handles:
            ax.legend(handles, labels, fontsize=8, loc="lower center",
                      bbox_to_anchor=(0.5, 1.0), ncol=min(len(handles), 4), frameon=False)
        fig.tight_layout()
        return save_figure(fig, out_png)


def _group_label(name: str, stats: dict | None) -> str:
    acc = (stats or {}).get("accuracy")
    return f"{name} ({100 * acc:.1f}%)" if _is_number(acc) else name


# --------------------------------------------------------------------------- examples grid

# CJK ideographs, kana, hangul and full-width punctuation may break anywhere; other text at spaces.
_TOKEN = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]|\s+|[^\s\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]+")


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _wrap(text: str, width: int = 30, max_lines: int = 3) -> list[str]:
    """Greedy wrap that also breaks Chinese (which has no spaces); wide chars count double."""
    lines, line = [], ""
    for token in _TOKEN.findall(" ".join(text.split())):
        for piece in _split_long(token, width):
            if line and _display_width(line + piece) > width:
                lines.append(line.rstrip())
                line = ""
            if line or not piece.isspace():  # no leading spaces on a new line
                line += piece
    if line.strip():
        lines.append(line.rstrip())
    if len(lines) > max_lines:  # keep every caption the same height
        lines = lines[:max_lines]
        lines[-1] = _short(lines[-1] + "…", width)
    return lines


def _split_long(token: str, width: int) -> list[str]:
    """Hard-split a word wider than a line (e.g. a long path or number)."""
    pieces = []
    while _display_width(token) > width:
        cut = max((i for i in range(1, len(token) + 1) if _display_width(token[:i]) <= width), default=1)
        pieces.append(token[:cut])
        token = token[cut:]
    return pieces + [token]


def _is_correct(example: dict) -> bool | None:
    truth = example.get("truth")
    if truth is None:
        return None
    return str(example.get("prediction", "")).strip().lower() == str(truth).strip().lower()


def _load_image(path: object):
    """RGB array, or None when the file is missing or unreadable (shown as a placeholder)."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:  # type: ignore[arg-type]
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, TypeError):
        return None


def plot_examples(examples: list[dict], out_png: Path, columns: int = 4) -> Path:
    """Grid of example images, each with its question and the prediction below it."""
    if not examples:
        raise ValueError("plot_examples needs at least one example")
    columns = max(1, min(columns, len(examples)))
    rows = math.ceil(len(examples) / columns)

    with pyplot() as plt:
        # Each grid row is an image row plus a text row, so long questions never overlap images.
        fig = plt.figure(figsize=(3.2 * columns, 3.6 * rows))
        grid = fig.add_gridspec(2 * rows, columns, height_ratios=[2.4, 1.1] * rows,
                                hspace=0.12, wspace=0.15)
        for i, example in enumerate(examples):
            r, c = divmod(i, columns)
            _draw_image(fig.add_subplot(grid[2 * r, c]), example.get("image"))
            _draw_caption(fig.add_subplot(grid[2 * r + 1, c]), example)
        return save_figure(fig, out_png)


def _draw_image(ax, path: object) -> None:
    image = _load_image(path)
    if image is None:
        ax.text(0.5, 0.5, "image missing", ha="center", va="center", color="grey", transform=ax.transAxes)
        ax.set_facecolor("#f0f0f0")
        ax.set_box_aspect(1)  # same square as the (usually square) real images
    else:
        ax.imshow(image, interpolation="nearest")  # 64x64 renders must stay crisp, not blurred
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_anchor("SW")  # line the image up with the left-aligned caption below it


def _draw_caption(ax, example: dict) -> None:
    ax.axis("off")
    question = "\n".join(_wrap(str(example.get("question", ""))))
    ax.text(0.0, 0.97, question, ha="left", va="top", fontsize=9, transform=ax.transAxes,
            linespacing=1.3)
    pred, truth = _answer_texts(example)
    correct = _is_correct(example)
    colour = _BLACK if correct is None else (_GREEN if correct else _RED)
    conf = example.get("confidence")
    if _is_number(conf):
        pred += f" ({100 * conf:.0f}%)"
    pred_artist = ax.text(0.0, 0.02, f"pred: {pred}", ha="left", va="bottom", fontsize=9,
                          fontweight="bold", color=colour, transform=ax.transAxes)
    if truth is not None:
        # Anchored to the end of the prediction text so the two colours read as one line.
        ax.annotate(f" / truth: {truth}", xy=(1, 0), xycoords=pred_artist,
                    ha="left", va="bottom", fontsize=9, color=_BLACK)


def _answer_texts(example: dict, budget: int = 16) -> tuple[str, str | None]:
    """Prediction and truth shortened to share one caption line (short answers stay whole)."""
    pred = str(example.get("prediction", ""))
    if example.get("truth") is None:
        return _short(pred, budget + 8), None  # room taken by " / truth: "
    truth = str(example["truth"])
    pred_width = min(_display_width(pred), max(budget // 2, budget - _display_width(truth)))
    return _short(pred, pred_width), _short(truth, budget - pred_width)


def _short(text: str, width: int) -> str:
    if _display_width(text) <= width:
        return text
    while _display_width(text + "…") > width and text:
        text = text[:-1]
    return text + "…"


# --------------------------------------------------------------------------- markdown


def _cell(value: object) -> str:
    """One Markdown table cell: no raw pipes or newlines, floats kept short."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _pct(acc: object) -> str:
    return f"{100 * acc:.1f}" if _is_number(acc) else "n/a"


def _count(stats: dict) -> str:
    count = stats.get("count")
    return str(count) if count is not None else ""


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    # Numbers right-aligned so the decimal points line up.
    align = ["---:" if h in _NUMERIC_COLUMNS else ":---" for h in header]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    return lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


def _info_section(info: dict | None) -> list[str]:
    if not info:
        return []
    return _table(["Setting", "Value"], [[k, v] for k, v in info.items()]) + [""]


def _accuracy_sections(metrics: dict) -> list[str]:
    overall = metrics.get("overall") or {}
    lines = ["## Overall accuracy", ""]
    count = overall.get("count")
    tail = f" on {count} questions" if count is not None else ""
    lines += [f"**{_pct(overall.get('accuracy'))}%**{tail}", ""]

    groups = metrics.get("groups") or {}
    if groups:
        rows = [[name, _pct(g.get("accuracy")), _count(g)] for name, g in groups.items()]
        lines += ["## Accuracy by group", ""] + _table(["Group", "Accuracy (%)", "Count"], rows) + [""]

    families = metrics.get("families") or {}
    if families:
        rows = [[name, f.get("group") or "", _pct(f.get("accuracy")), _count(f)] for name, f in families.items()]
        lines += ["## Accuracy by family", ""]
        lines += _table(["Family", "Group", "Accuracy (%)", "Count"], rows) + [""]
    return lines


def write_report(
    out_dir: Path,
    *,
    title: str,
    metrics: dict,
    examples: list[dict],
    metrics_csv: Path | None = None,
    info: dict | None = None,
    notes: list[str] = (),
) -> Path:
    """Write ``out_dir/report.md`` and its PNGs; returns the path of ``report.md``.

    notes: plain warnings shown first, e.g. that a time cap cut training.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (CURVE_PNG, FAMILY_PNG, EXAMPLES_PNG):
        (out_dir / stale).unlink(missing_ok=True)  # never leave an old run's plot beside this report

    lines = [f"# {title}", ""] + [f"> **Note:** {note}" for note in notes] + ([""] if notes else [])
    lines += _info_section(info) + _accuracy_sections(metrics)
    plot_family_accuracy(metrics, out_dir / FAMILY_PNG)
    lines += [f"![Accuracy per family]({FAMILY_PNG})", ""]

    lines += ["## Training curve", ""]
    curve = plot_training_curve(metrics_csv, out_dir / CURVE_PNG) if metrics_csv else None
    lines += [f"![Training curve]({CURVE_PNG})" if curve else "_No training metrics available._", ""]

    lines += ["## Examples", ""]
    if examples:
        plot_examples(examples, out_dir / EXAMPLES_PNG)
        lines += ["Prediction in green when correct, red when wrong, black when there is no answer.", ""]
        lines += [f"![Example predictions]({EXAMPLES_PNG})", ""]
    else:
        lines += ["_No examples._", ""]

    report = out_dir / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report
