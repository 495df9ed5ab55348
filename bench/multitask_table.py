"""Each task trained alone vs together (task multitask) at the same steps: a markdown table (a script, not a test).

Reads the eval.json and run.json of a multitask run and of each member trained alone, as written by:

    vlfuse data shapes data/shapes1k --images 1000 --questions-per-image 10 --no-dialogs
    vlfuse train configs/multitask_shapes.yaml                          # runs/multitask_shapes
    for t in vqa retrieval captioning matching; do vlfuse train configs/multitask/$t.yaml; done
    # captioning also decoded greedily (the default beam 3 + length penalty 0.6 can pick an empty caption):
    vlfuse eval runs/multitask_shapes/model/captioning --set captioning.beam_size=1 \
        --out runs/multitask_shapes/eval_greedy_captioning.json
    vlfuse eval runs/multitask_alone/captioning/model --set captioning.beam_size=1 \
        --out runs/multitask_alone/captioning/eval_greedy.json
    python bench/multitask_table.py [--together runs/multitask_shapes] [--alone runs/multitask_alone]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# task -> (label, how to read the number from the task's eval.json), the headline metrics of each task
METRICS = {
    "vqa": [("accuracy %", lambda m: m["overall"]["accuracy"])],
    "retrieval": [("text→image R@1 %", lambda m: m["reranked"]["t2i_r1"]),
                  ("image→text R@1 %", lambda m: m["reranked"]["i2t_r1"])],
    "captioning": [("BLEU-4, beam 3", lambda m: m["bleu_4"]), ("CIDEr-D, beam 3", lambda m: m["cider_d"])],
    "matching": [("accuracy %", lambda m: m["accuracy"]), ("AUROC %", lambda m: m["auroc"])],
}


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def rows(together: Path, alone: Path) -> list[str]:
    joint = read(together / "eval.json")["tasks"]
    lines = ["| task | metric | alone | together | together − alone |", "|---|---|---|---|---|"]
    for task, metrics in METRICS.items():
        if task not in joint or not (alone / task / "eval.json").is_file():
            continue
        own = read(alone / task / "eval.json")
        for label, get in metrics:
            a, b = 100 * get(own), 100 * get(joint[task])
            lines.append(f"| {task} | {label} | {a:.1f} | {b:.1f} | {b - a:+.1f} |")
    greedy_alone, greedy_joint = alone / "captioning" / "eval_greedy.json", together / "eval_greedy_captioning.json"
    if greedy_alone.is_file() and greedy_joint.is_file():
        own, joint_greedy = read(greedy_alone), read(greedy_joint)
        for label, key in (("BLEU-4, greedy", "bleu_4"), ("CIDEr-D, greedy", "cider_d")):
            a, b = 100 * own[key], 100 * joint_greedy[key]
            lines.append(f"| captioning | {label} | {a:.1f} | {b:.1f} | {b - a:+.1f} |")
    return lines


def budget(together: Path, alone: Path) -> list[str]:
    """Steps, training seconds and parameters of each run."""
    joint = read(together / "run.json")
    lines = ["| run | steps | training s | parameters |", "|---|---|---|---|"]
    total_steps, total_seconds, total_params = 0, 0.0, 0
    for task in joint["members"]:
        run = read(alone / task / "run.json")
        total_steps, total_seconds = total_steps + run["steps"], total_seconds + run["training_seconds"]
        total_params += run["parameters"]
        lines.append(f"| {task} alone | {run['steps']} | {run['training_seconds']:.0f} | {run['parameters']:,} |")
    lines.append(f"| all alone | {total_steps} | {total_seconds:.0f} | {total_params:,} |")
    lines.append(f"| together ({joint['schedule']}) | {joint['steps']} | {joint['training_seconds']:.0f} | "
                 f"{joint['parameters']:,} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--together", type=Path, default=Path("runs/multitask_shapes"))
    parser.add_argument("--alone", type=Path, default=Path("runs/multitask_alone"))
    args = parser.parse_args()
    print("\n".join(rows(args.together, args.alone)))
    print()
    print("\n".join(budget(args.together, args.alone)))


if __name__ == "__main__":
    main()
