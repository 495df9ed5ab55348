"""Table of bench/pretrain_10pct.sh: test accuracy per seed and the mean, with and without pre-training."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

GROUPS = ("non-relational", "binary", "ternary")


def row(metrics: dict) -> list[float]:
    return [100 * metrics["overall"]["accuracy"]] + [100 * metrics["groups"][g]["accuracy"] for g in GROUPS]


def main(out: Path) -> None:
    seeds = sorted(out.glob("seed*"), key=lambda p: int(p.name[4:]))
    lines = ["| run | seed | overall % | non-relational % | binary % | ternary % | steps | train wall s |",
             "|---|---|---|---|---|---|---|---|"]
    means = {}
    for variant in ("scratch", "pretrained"):
        rows = []
        for seed_dir in seeds:
            run = seed_dir / variant
            if not (run / "eval.json").is_file():
                continue
            values = row(json.loads((run / "eval.json").read_text()))
            info = json.loads((run / "run.json").read_text())
            rows.append(values)
            lines.append(f"| {variant} | {seed_dir.name[4:]} | " + " | ".join(f"{v:.2f}" for v in values)
                         + f" | {info['steps']} | {info['wall_seconds']:.0f} |")
        if rows:
            columns = list(zip(*rows))
            means[variant] = [statistics.mean(c) for c in columns]
            spread = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in columns]
            lines.append(f"| **{variant} mean ± sd** | {len(rows)} seeds | "
                         + " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in zip(means[variant], spread)) + " | | |")
    if len(means) == 2:
        lines.append("| **pretrained − scratch** | | " + " | ".join(
            f"{p - s:+.2f}" for p, s in zip(means["pretrained"], means["scratch"])) + " | | |")
    pre = out / "pretrain" / "run.json"
    if pre.is_file():
        info = json.loads(pre.read_text())
        lines.append(f"\nPre-training: {info['steps']} steps, {info['epochs_completed']} epochs, "
                     f"{info['wall_seconds']:.0f} s, objectives {info['objectives']}.")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/pretrain_10pct"))
