"""The knowledge-graph worked example: built-in scenes, a graph of facts the pixels do not show, and
questions that need them (docs/knowledge_graphs.md).

The graph gives every colour a weight and every shape a material:

    red, blue, gray -> heavy      green, orange, yellow -> light      (relation has_weight)
    circle -> wood, square -> metal, triangle -> glass                (relation made_of)

and a shuffled graph in which every colour's weight and every shape's material changes (weights
swapped, materials rotated), for the control. Writes, under OUT:

    images/, scenes/ ...      the built-in data (vlfuse.data.shapes.generate)
    kg.jsonl, kg_shuffled.jsonl, kg.csv   the two graphs (kg.csv: the first again, as CSV)
    kg/{split}.jsonl          VQA questions (JSONL format) whose answers follow kg.jsonl
    kg/test_shuffled.jsonl    the test questions again, answered by kg_shuffled.jsonl

Question families (question_type): kg_weight "Is the red object heavy?"; kg_closest_weight "Is the
object closest to the red object heavy?"; kg_material "What is the red object made of?";
kg_count_material "How many objects are made of metal?"; kg_left_weight "What is the weight of the
leftmost object?". ("How many heavy objects are there?" is left out: every scene holds one object of
each colour, so its answer never changes.)

    python -m bench.kg_example OUT [--images 1200]
    vlfuse train configs/kg_shapes.yaml --set data.root=OUT
    bash bench/kg_example.sh OUT RUNS       # everything: both runs, the controls, RUNS/results.md
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
from pathlib import Path

from vlfuse.data.shapes import generate

WEIGHTS = {"red": "heavy", "blue": "heavy", "gray": "heavy", "green": "light", "orange": "light", "yellow": "light"}
MATERIALS = {"circle": "wood", "square": "metal", "triangle": "glass"}
SHUFFLED_WEIGHTS = {c: "light" if w == "heavy" else "heavy" for c, w in WEIGHTS.items()}
SHUFFLED_MATERIALS = {"circle": "metal", "square": "glass", "triangle": "wood"}
MARGIN = 0.03  # of the image size: a closest object nearer than this to the runner-up is ambiguous, not asked
PER_FAMILY = 2  # questions per family per image (one for kg_left_weight)


def triples(weights: dict, materials: dict) -> list[dict]:
    return ([{"head": c, "relation": "has_weight", "tail": w} for c, w in weights.items()]
            + [{"head": s, "relation": "made_of", "tail": m} for s, m in materials.items()])


def closest(objects: list[dict], anchor: dict, size: float) -> dict | None:
    """The object nearest `anchor`, or None when the runner-up is within MARGIN of it."""
    ranked = sorted((math.dist((o["x"], o["y"]), (anchor["x"], anchor["y"])), i) for i, o in enumerate(objects)
                    if o is not anchor)
    if len(ranked) > 1 and ranked[1][0] - ranked[0][0] < MARGIN * size:
        return None
    return objects[ranked[0][1]]


def questions(objects: list[dict], size: float, weights: dict, materials: dict, rng: random.Random) -> list[tuple]:
    """(family, question, answer, the colour whose weight the answer reads or None) about one scene,
    answered by the graph (weights, materials)."""
    by_colour = {o["color"]: o for o in objects}
    asked = []
    for colour in rng.sample(sorted(by_colour), PER_FAMILY):
        asked.append(("kg_weight", f"Is the {colour} object heavy?", "yes" if weights[colour] == "heavy" else "no",
                      colour))
    for colour in rng.sample(sorted(by_colour), len(by_colour)):
        near = closest(objects, by_colour[colour], size)
        if near is not None and sum(q[0] == "kg_closest_weight" for q in asked) < PER_FAMILY:
            asked.append(("kg_closest_weight", f"Is the object closest to the {colour} object heavy?",
                          "yes" if weights[near["color"]] == "heavy" else "no", near["color"]))
    for colour in rng.sample(sorted(by_colour), PER_FAMILY):
        asked.append(("kg_material", f"What is the {colour} object made of?", materials[by_colour[colour]["shape"]],
                      None))
    for material in rng.sample(sorted(set(materials.values())), PER_FAMILY):
        count = sum(materials[o["shape"]] == material for o in objects)
        asked.append(("kg_count_material", f"How many objects are made of {material}?", str(count), None))
    leftmost = min(objects, key=lambda o: o["x"])
    asked.append(("kg_left_weight", "What is the weight of the leftmost object?", weights[leftmost["color"]],
                  leftmost["color"]))
    return asked


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_split(out: Path, split: str, seed: int, hold_out: frozenset[str] = frozenset()) -> None:
    """kg/{split}.jsonl (and, for test, the same questions answered by the shuffled graph). A question
    whose answer reads the weight of a colour in `hold_out` is left out of train and val, and is of
    family "{family}_unseen" in test: only the graph says what such a colour weighs."""
    scenes = json.loads((out / "scenes" / f"{split}_scenes.json").read_text(encoding="utf-8"))
    rows, shuffled = [], []
    for scene in scenes["scenes"]:
        base = {"image": scene["file_name"], "image_id": scene["image_id"]}
        for graph, target in ((WEIGHTS, MATERIALS), (SHUFFLED_WEIGHTS, SHUFFLED_MATERIALS)):
            rng = random.Random(f"{seed}:{split}:{scene['image_id']}")  # the same questions under both graphs
            asked = questions(scene["objects"], scenes["size"], graph, target, rng)
            (rows if graph is WEIGHTS else shuffled).extend(
                {**base, "question_id": scene["image_id"] * 100 + k, "question": q, "answer": a,
                 "question_type": f + ("_unseen" if colour in hold_out else "")}
                for k, (f, q, a, colour) in enumerate(asked) if split == "test" or colour not in hold_out)
    write_jsonl(out / "kg" / f"{split}.jsonl", rows)
    if split == "test":
        write_jsonl(out / "kg" / "test_shuffled.jsonl", shuffled)


ROWS = (("with the graph", "with_kg/eval.json"), ("without the graph", "without_kg/eval.json"),
        ("with the graph, shuffled at test", "with_kg/eval_shuffled_graph.json"),
        ("with the graph, removed at test", "with_kg/eval_no_graph.json"),
        ("shuffled graph's answers: with the shuffled graph", "with_kg/eval_shuffled_answers.json"),
        ("shuffled graph's answers: without the graph", "without_kg/eval_shuffled_answers.json"))


def table(runs: Path) -> str:
    """Test accuracy (%) per run and family, as markdown, from the eval JSONs bench/kg_example.sh writes."""
    found = {label: json.loads((runs / name).read_text(encoding="utf-8")) for label, name in ROWS
             if (runs / name).is_file()}
    families = list(dict.fromkeys(f for metrics in found.values() for f in metrics["families"]))
    lines = ["| model, test graph | overall | " + " | ".join(families) + " |", "|---" * (len(families) + 2) + "|"]
    for label, metrics in found.items():
        cells = [metrics["overall"]] + [metrics["families"].get(f, {"accuracy": float("nan")}) for f in families]
        lines.append(f"| {label} | " + " | ".join(f"{100 * c['accuracy']:.1f}" for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="where to write the data (with --table: the runs folder to read)")
    parser.add_argument("--table", action="store_true", help="print the results table of bench/kg_example.sh")
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--hold-out", default="", help="colours (comma-separated) whose weight no train or val "
                                                       "answer shows, e.g. gray,yellow")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.out))
        return
    generate(args.out, images=args.images, questions_per_image=1, size=args.size, seed=args.seed,
             val_fraction=0.1, test_fraction=0.2, progress=False, dialogs=False)
    (args.out / "kg").mkdir(exist_ok=True)
    write_jsonl(args.out / "kg.jsonl", triples(WEIGHTS, MATERIALS))
    write_jsonl(args.out / "kg_shuffled.jsonl", triples(SHUFFLED_WEIGHTS, SHUFFLED_MATERIALS))
    with (args.out / "kg.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["head", "relation", "tail"])
        writer.writeheader()
        writer.writerows(triples(WEIGHTS, MATERIALS))
    for split in ("train", "val", "test"):
        write_split(args.out, split, args.seed, frozenset(filter(None, args.hold_out.split(","))))
    counts = {s: sum(1 for _ in (args.out / "kg" / f"{s}.jsonl").open()) for s in ("train", "val", "test")}
    print(json.dumps({"out": str(args.out), "questions": counts}))


if __name__ == "__main__":
    main()
