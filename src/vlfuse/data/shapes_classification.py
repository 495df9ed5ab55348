"""A multimodal classification table from the built-in shapes data (task classification).

Each record claims two objects, "a red circle and a blue square"; its label says which claims
the image bears out: `both`, `first`, `second` or `neither`. The four labels are drawn uniformly,
so neither the text alone nor the image alone tells them apart (majority class: about 25%).
Written as JSON Lines with the classification fields `image`, `text`, `label`:

    python -m vlfuse.data.shapes_classification data/shapes4k [--per-image 6] [--seed 0]

reads data/shapes4k/scenes/{split}_scenes.json and writes data/shapes4k/classification_{split}.jsonl
beside images/ (image paths relative to the table and inside its folder, as tables must have them, so
`vlfuse eval MODEL --data that.jsonl` finds them).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from .shapes import SHAPES

LABELS = ("both", "first", "second", "neither")  # which of the two claims holds


def _claim(obj: dict, holds: bool, rng: random.Random) -> str:
    shape = obj["shape"] if holds else rng.choice([s for s in SHAPES if s != obj["shape"]])
    return f"{'an' if obj['color'][0] in 'aeiou' else 'a'} {obj['color']} {shape}"


def scene_records(scene: dict, image: str, per_image: int, rng: random.Random) -> list[dict]:
    """`per_image` records about one scene: two distinct objects each, claims true or false by the label."""
    records = []
    for _ in range(per_image):
        first, second = rng.sample(scene["objects"], 2)
        label = rng.choice(LABELS)
        text = (f"{_claim(first, label in ('both', 'first'), rng)} and "
                f"{_claim(second, label in ('both', 'second'), rng)}")
        records.append({"image": image, "text": text, "label": label})
    return records


def write_tables(root: str | Path, per_image: int = 6, seed: int = 0) -> dict[str, Path]:
    """classification_{split}.jsonl in `root` for every split whose scenes file exists under it."""
    root = Path(root)
    rng = random.Random(seed)
    written = {}
    for split in ("train", "val", "test"):
        scenes_file = root / "scenes" / f"{split}_scenes.json"
        if not scenes_file.is_file():
            continue
        scenes = json.loads(scenes_file.read_text(encoding="utf-8"))["scenes"]
        lines = [json.dumps(r) for scene in scenes
                 for r in scene_records(scene, f"images/{split}/{scene['file_name']}", per_image, rng)]
        target = root / f"classification_{split}.jsonl"
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written[split] = target
    if not written:
        raise FileNotFoundError(f"no scenes/{{train,val,test}}_scenes.json under {root}: make the data with "
                                f"`vlfuse data shapes {root}` first")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="a folder written by `vlfuse data shapes`")
    parser.add_argument("--per-image", type=int, default=6, help="records per image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for split, path in write_tables(args.root, args.per_image, args.seed).items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
