"""The knowledge-graph worked example: built-in scenes, graphs of facts the pixels do not show, and
questions that need them (docs/knowledge_graphs.md).

Every graph gives every colour a weight and every shape a material, drawn anew per graph:

    red -> heavy | light, ... (relation has_weight)      circle -> wood | metal | glass, ... (made_of)

Each image is answered under one graph, and its questions name that graph (the row field
`knowledge_graph`, read with `data.knowledge_graph: per_sample`), so the graph is the only way to know
a fact: no answer can be learnt by heart. Validation and test images use graphs of their own, fact
combinations no training graph holds. Writes, under OUT:

    images/, scenes/ ...          the built-in data (vlfuse.data.shapes.generate)
    kg/graphs/{split}_NNN.jsonl   the graphs: --graphs for train, a quarter as many for test, an eighth val
    kg/{split}.jsonl              VQA questions (JSONL format), each naming the graph that answers it
    kg/test_swapped.jsonl         the test questions with their answers, each naming another test graph
                                  (the control: a model that reads the graph drops to chance)

Question families (question_type): kg_weight "Is the red object heavy?"; kg_closest_weight "Is the
object closest to the red object heavy?"; kg_material "What is the red object made of?";
kg_count_material "How many objects are made of metal?"; kg_left_weight "What is the weight of the
leftmost object?".

    python -m bench.kg_example OUT [--images 1200] [--graphs 64]
    vlfuse train configs/kg_shapes.yaml --set data.root=OUT
    bash bench/kg_example.sh OUT RUNS       # everything: both runs, the controls, RUNS/results.md
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

from vlfuse.data.scene import COLORS, SHAPES
from vlfuse.data.shapes import generate

WEIGHTS = ("heavy", "light")
MATERIALS = ("wood", "metal", "glass")
MARGIN = 0.03  # of the image size: a closest object nearer than this to the runner-up is ambiguous, not asked
PER_FAMILY = 2  # questions per family per image (one for kg_left_weight)
SPLIT_GRAPHS = {"train": 1, "val": 1 / 8, "test": 1 / 4}  # graphs per split, as a share of --graphs


def triples(weights: dict, materials: dict) -> list[dict]:
    return ([{"head": c, "relation": "has_weight", "tail": w} for c, w in weights.items()]
            + [{"head": s, "relation": "made_of", "tail": m} for s, m in materials.items()])


def draw_graphs(count: int, rng: random.Random, taken: set) -> list[tuple[dict, dict]]:
    """`count` (weights, materials) fact sets, each colour's weight and each shape's material drawn
    anew, none equal to one in `taken` (which they join): a later split's graphs are unseen combinations."""
    if len(taken) + count > len(WEIGHTS) ** len(COLORS) * len(MATERIALS) ** len(SHAPES):
        raise SystemExit("error: --graphs asks for more graphs than there are fact combinations")
    graphs = []
    while len(graphs) < count:
        weights = {c: rng.choice(WEIGHTS) for c in COLORS}
        materials = {s: rng.choice(MATERIALS) for s in SHAPES}
        key = (tuple(weights.values()), tuple(materials.values()))
        if key not in taken:
            taken.add(key)
            graphs.append((weights, materials))
    return graphs


def closest(objects: list[dict], anchor: dict, size: float) -> dict | None:
    """The object nearest `anchor`, or None when the runner-up is within MARGIN of it."""
    ranked = sorted((math.dist((o["x"], o["y"]), (anchor["x"], anchor["y"])), i) for i, o in enumerate(objects)
                    if o is not anchor)
    if len(ranked) > 1 and ranked[1][0] - ranked[0][0] < MARGIN * size:
        return None
    return objects[ranked[0][1]]


def questions(objects: list[dict], size: float, weights: dict, materials: dict, rng: random.Random) -> list[tuple]:
    """(family, question, answer) about one scene, answered by the graph (weights, materials)."""
    by_colour = {o["color"]: o for o in objects}
    asked = []
    for colour in rng.sample(sorted(by_colour), PER_FAMILY):
        asked.append(("kg_weight", f"Is the {colour} object heavy?", "yes" if weights[colour] == "heavy" else "no"))
    for colour in rng.sample(sorted(by_colour), len(by_colour)):
        near = closest(objects, by_colour[colour], size)
        if near is not None and sum(q[0] == "kg_closest_weight" for q in asked) < PER_FAMILY:
            asked.append(("kg_closest_weight", f"Is the object closest to the {colour} object heavy?",
                          "yes" if weights[near["color"]] == "heavy" else "no"))
    for colour in rng.sample(sorted(by_colour), PER_FAMILY):
        asked.append(("kg_material", f"What is the {colour} object made of?", materials[by_colour[colour]["shape"]]))
    for material in rng.sample(MATERIALS, PER_FAMILY):
        count = sum(materials[o["shape"]] == material for o in objects)
        asked.append(("kg_count_material", f"How many objects are made of {material}?", str(count)))
    leftmost = min(objects, key=lambda o: o["x"])
    asked.append(("kg_left_weight", "What is the weight of the leftmost object?", weights[leftmost["color"]]))
    return asked


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_graphs(out: Path, graphs: dict[str, list]) -> None:
    (out / "kg" / "graphs").mkdir(parents=True, exist_ok=True)
    for split, facts in graphs.items():
        for k, (weights, materials) in enumerate(facts):
            write_jsonl(out / "kg" / graph_file(split, k), triples(weights, materials))


def graph_file(split: str, k: int) -> str:
    return f"graphs/{split}_{k:03d}.jsonl"  # relative to kg/, as the rows name it


def write_split(out: Path, split: str, graphs: list, seed: int) -> None:
    """kg/{split}.jsonl: each image answered under one of `graphs` (drawn per image), its questions naming
    it; for test also kg/test_swapped.jsonl, the same rows naming another test graph."""
    scenes = json.loads((out / "scenes" / f"{split}_scenes.json").read_text(encoding="utf-8"))
    rows, swapped = [], []
    for scene in scenes["scenes"]:
        rng = random.Random(f"{seed}:{split}:{scene['image_id']}")
        k = rng.randrange(len(graphs))
        other = rng.choice([j for j in range(len(graphs)) if j != k] or [k])
        weights, materials = graphs[k]
        for n, (family, question, answer) in enumerate(questions(scene["objects"], scenes["size"], weights,
                                                                  materials, rng)):
            row = {"image": scene["file_name"], "image_id": scene["image_id"], "question_id": scene["image_id"] * 100 + n,
                   "question": question, "answer": answer, "question_type": family,
                   "knowledge_graph": graph_file(split, k)}
            rows.append(row)
            swapped.append({**row, "knowledge_graph": graph_file(split, other)})
    write_jsonl(out / "kg" / f"{split}.jsonl", rows)
    if split == "test":
        write_jsonl(out / "kg" / "test_swapped.jsonl", swapped)


ROWS = (("with the graph", "with_kg/eval.json"), ("with the graph, no fact nodes", "entities_kg/eval.json"),
        ("without the graph", "without_kg/eval.json"),
        ("with the graph, another image's graph at test", "with_kg/eval_swapped.json"),
        ("with the graph, removed at test", "with_kg/eval_no_graph.json"))


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
    parser.add_argument("--graphs", type=int, default=64, help="training graphs (test: a quarter as many, val: "
                                                                   "an eighth, at least 2 each)")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.out))
        return
    generate(args.out, images=args.images, questions_per_image=1, size=args.size, seed=args.seed,
             val_fraction=0.1, test_fraction=0.2, progress=False, dialogs=False)
    rng, taken = random.Random(args.seed), set()
    graphs = {split: draw_graphs(max(2, round(args.graphs * share)), rng, taken) for split, share in SPLIT_GRAPHS.items()}
    write_graphs(args.out, graphs)
    for split, facts in graphs.items():
        write_split(args.out, split, facts, args.seed)
    counts = {s: sum(1 for _ in (args.out / "kg" / f"{s}.jsonl").open()) for s in graphs}
    print(json.dumps({"out": str(args.out), "questions": counts, "graphs": {s: len(g) for s, g in graphs.items()}}))


if __name__ == "__main__":
    main()
