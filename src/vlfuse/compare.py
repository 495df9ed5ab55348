"""`vlfuse compare`: train several fusions on the same data, encoders, budget and seeds; rank them.

Each (fusion, seed) run lives in OUT/<fusion>/seed<k> and is an ordinary `vlfuse train` run, so an
interrupted comparison resumes: finished runs are read back, interrupted ones continue from their
last checkpoint. The leaderboard is written as leaderboard.md, leaderboard.json and leaderboard.png.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .errors import ConfigError

GROUP_ORDER = ("non-relational", "binary", "ternary")
# What a fusion needs of the rest of the model, applied on top of the base config.
FUSION_NEEDS: dict[str, dict[str, dict]] = {
    "late": {"head": {"name": "classifier", "hidden": 0}},  # a linear head: per-modality predictions are summed
}
# A fusion that reads the text model's input embeddings (mmbt: MiniLM reads the image tokens too).
EMBEDDINGS_ONLY_TEXT = {"name": "pretrained", "embeddings_only": True}


def fusion_needs(fusion: str) -> dict[str, dict]:
    """What `fusion` needs of the rest of the model: FUSION_NEEDS, and what its own attributes say."""
    from .models.factory import FUSIONS
    from .types import fusion_trait

    needs = dict(FUSION_NEEDS.get(fusion, {}))
    if fusion_trait(FUSIONS[fusion], "reads_text_embeddings"):
        needs["text_encoder"] = EMBEDDINGS_ONLY_TEXT
    return needs


@dataclass
class RunSummary:
    fusion: str
    seed: int
    metrics: dict  # as evaluate_samples returns it
    parameters: int
    train_seconds: float
    steps: int
    ms_per_question: float
    cut: bool = False  # stopped before its planned steps (time cap, early stopping): not equal work


def fusion_config(base: Config, fusion: str, seed: int, max_minutes: float | None, out_dir: Path) -> Config:
    """`base` with only the fusion, seed, time cap and output folder changed. The budget is the base's
    train.epochs; `max_minutes` is only a safety cap, and a run it cuts is marked in the leaderboard.

    The fusion keeps the base config's settings when the base already uses it; otherwise it gets its
    constructor defaults, plus what that fusion needs of the rest of the model (fusion_needs).
    """
    from .models.factory import FUSIONS

    if fusion not in FUSIONS:
        raise ConfigError(f"--fusions: unknown fusion {fusion!r}; known: {', '.join(FUSIONS)}")
    config = copy.deepcopy(base)
    if config.model.fusion.get("name") != fusion:
        config.model.fusion = {"name": fusion}
    for section, spec in fusion_needs(fusion).items():
        current = getattr(config.model, section)
        # the same component keeps the base's other settings (a soft_bce head stays soft_bce when made linear)
        same = current.get("name") == spec["name"]
        setattr(config.model, section, {**current, **spec} if same else copy.deepcopy(spec))
    config.seed = seed
    config.out_dir = str(out_dir)
    if max_minutes is not None:
        config.train.max_minutes = max_minutes
    config.train.progress_bar = False  # one line per run reads better than a dozen bars
    return config


def run_one(config: Config, progress: bool = True) -> RunSummary:
    """Train (or resume, or read back) one run; its accuracy and inference speed come from its eval.json."""
    from .tasks import train

    out = Path(config.out_dir)
    finished = (out / "run.json").is_file() and (out / "eval.json").is_file()
    if not finished:
        result = train(config, resume=(out / "checkpoints" / "last.ckpt").is_file(), progress=progress)
        if result.interrupted:
            raise KeyboardInterrupt
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    metrics = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    return RunSummary(config.model.fusion["name"], config.seed, metrics, run["parameters"], run["wall_seconds"],
                      run["steps"], metrics.get("ms_per_question", float("nan")),
                      run["steps"] < run.get("planned_steps", run["steps"]))


def _mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def leaderboard(runs: list[RunSummary]) -> list[dict]:
    """One row per fusion, best overall accuracy first; accuracies as mean and std over seeds."""
    rows = []
    for fusion in dict.fromkeys(r.fusion for r in runs):
        mine = [r for r in runs if r.fusion == fusion]
        groups = {g for r in mine for g in r.metrics.get("groups", {})}
        families = dict.fromkeys(f for r in mine for f in r.metrics["families"])  # evaluation's order: by group
        rows.append({
            "fusion": fusion,
            "seeds": [r.seed for r in mine],
            "overall": _mean_std([r.metrics["overall"]["accuracy"] for r in mine]),
            "groups": {g: _mean_std([r.metrics["groups"][g]["accuracy"] for r in mine if g in r.metrics["groups"]])
                       for g in sorted(groups, key=lambda g: GROUP_ORDER.index(g) if g in GROUP_ORDER else 99)},
            "families": {f: _mean_std([r.metrics["families"][f]["accuracy"] for r in mine
                                       if f in r.metrics["families"]]) for f in families},
            "parameters": mine[0].parameters,
            "train_seconds": statistics.fmean(r.train_seconds for r in mine),
            "steps": statistics.fmean(r.steps for r in mine),
            "cut": any(r.cut for r in mine),
            "ms_per_question": statistics.fmean(r.ms_per_question for r in mine),
        })
        rows[-1].update(class_scores(mine))
    return sorted(rows, key=lambda row: -row["overall"]["mean"])


def class_scores(runs: list[RunSummary]) -> dict:
    """Tasks classification and matching: macro-F1 and each class's accuracy (mean and std over seeds)."""
    if not all("macro_f1" in r.metrics for r in runs):
        return {}
    classes = dict.fromkeys(c for r in runs for c in r.metrics.get("per_class", {}))
    per_class = {c: [r.metrics["per_class"][c]["accuracy"] for r in runs
                     if r.metrics["per_class"].get(c, {}).get("accuracy") is not None] for c in classes}
    return {"macro_f1": _mean_std([r.metrics["macro_f1"] for r in runs]),
            "per_class": {c: _mean_std(v) for c, v in per_class.items() if v}}


def _pct(stat: dict) -> str:
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def to_markdown(rows: list[dict], command: str) -> str:
    groups = list(dict.fromkeys(g for row in rows for g in row["groups"]))
    f1 = any("macro_f1" in row for row in rows)
    head = ["fusion", "overall %", *(["macro-F1 %"] if f1 else []), *(f"{g} %" for g in groups), "parameters",
            "train s", "steps", "ms / question"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["fusion"], _pct(row["overall"]), *([_pct(row["macro_f1"]) if "macro_f1" in row else "–"] if f1
                                                        else []),
                 *(_pct(row["groups"][g]) if g in row["groups"] else "–" for g in groups),
                 f"{row['parameters']:,}", f"{row['train_seconds']:.0f}",
                 f"{row['steps']:.0f}" + (" (cut)" if row.get("cut") else ""), f"{row['ms_per_question']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    families = list(dict.fromkeys(f for row in rows for f in row["families"]))
    fam_lines = ["| family | " + " | ".join(row["fusion"] for row in rows) + " |", "|" + "---|" * (len(rows) + 1)]
    for f in families:
        fam_lines.append(f"| {f} | " + " | ".join(_pct(row["families"][f]) if f in row["families"] else "–"
                                                 for row in rows) + " |")
    seeds = rows[0]["seeds"] if rows else []
    return "\n".join([
        "# Fusion leaderboard", "",
        f"Accuracy on the test split, mean ± standard deviation over {len(seeds)} seed(s) {seeds}; same data, "
        "encoders, budget and seeds for every fusion. Made with:", "", f"    {command}", "",
        *lines, "", *(["(cut): a run stopped before its planned steps (the time cap or early stopping), so that "
                        "row did less work than the others.", ""] if any(row.get("cut") for row in rows) else []),
        *_per_class_lines(rows), "## Per question family (accuracy %)", "", *fam_lines, "",
    ])


def _per_class_lines(rows: list[dict]) -> list[str]:
    """Classification: each class's accuracy (its recall) per fusion; nothing for VQA."""
    classes = list(dict.fromkeys(c for row in rows for c in row.get("per_class", {})))
    if not classes:
        return []
    lines = ["Accuracy per class (%, on that class's examples):", "",
             "| class | " + " | ".join(row["fusion"] for row in rows) + " |", "|" + "---|" * (len(rows) + 1)]
    lines += [f"| {c} | " + " | ".join(_pct(row["per_class"][c]) if c in row.get("per_class", {}) else "–"
                                      for row in rows) + " |" for c in classes]
    return lines + [""]


def plot_leaderboard(rows: list[dict], out_png: Path) -> Path:
    """Grouped bars: accuracy per question group for each fusion, error bars = std over seeds."""
    from .plotting import pyplot, save_figure

    groups = list(dict.fromkeys(g for row in rows for g in row["groups"])) or ["overall"]
    with pyplot() as plt:
        fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.2))
        width = 0.8 / len(groups)
        for j, g in enumerate(groups):
            stats = [row["groups"].get(g, {"mean": 0.0, "std": 0.0}) if g != "overall" else row["overall"]
                     for row in rows]
            xs = [i + (j - (len(groups) - 1) / 2) * width for i in range(len(rows))]
            ax.bar(xs, [100 * s["mean"] for s in stats], width, yerr=[100 * s["std"] for s in stats], label=g,
                   capsize=2)
        ax.set_xticks(range(len(rows)), [row["fusion"] for row in rows], rotation=30, ha="right")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.legend(fontsize=8, ncol=len(groups), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
        fig.tight_layout()
        return save_figure(fig, out_png)


def compare(base: Config, fusions: list[str], out: Path, max_minutes: float | None = None, seeds: int = 1,
            command: str = "", progress: bool = True) -> Path:
    """Train every fusion with every seed (base.seed, base.seed + 1, ...); returns leaderboard.md's path."""
    if not fusions:
        raise ConfigError("--fusions: name at least one fusion")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    out = Path(out)
    jobs = [(f, base.seed + k) for f in fusions for k in range(seeds)]
    configs = [fusion_config(base, f, s, max_minutes, out / f / f"seed{s}") for f, s in jobs]  # validate all first
    runs = []
    for (fusion, seed), config in zip(jobs, configs):
        print(f"[{len(runs) + 1}/{len(jobs)}] {fusion}, seed {seed} -> {config.out_dir}", file=sys.stderr)
        run = run_one(config, progress)
        print(f"    overall {100 * run.metrics['overall']['accuracy']:.1f}% in {run.train_seconds:.0f} s",
              file=sys.stderr)
        runs.append(run)
    rows = leaderboard(runs)
    (out / "leaderboard.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2), encoding="utf-8")
    plot_leaderboard(rows, out / "leaderboard.png")
    md = out / "leaderboard.md"
    md.write_text(to_markdown(rows, command) + "\n![leaderboard](leaderboard.png)\n", encoding="utf-8")
    return md
