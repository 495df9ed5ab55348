"""Does the map land on the object the question is about? A check on the built-in shapes data.

The non-relational questions ("shape", "left", "top") each name one object, colors[0] in the
scenes file that `vlfuse data shapes` writes (OUT/scenes/{split}_scenes.json, beside the VQA files),
which also gives every object's colour, shape, centre and radius, so its exact pixels
(`shapes.object_mask`). For each such question (up to `limit`, spread over the images):

  object_mass   share of the heatmap on the object's pixels     object_area   their share of the image
  box_mass      share on the object's bounding box               box_area      the box's share of the image
  uniform_mass  share on the object's pixels of the map that weighs every image token alike: the
                chance level of the encoder's token layout (object boxes already hug the objects)
  pointing      1 when the heatmap's peak pixel lies in the box (the "pointing game")
  word_mass     share on the object's pixels of the map of the colour word itself ("red"), where
                the method has per-word maps and the word is one token (English questions)
  correct       1 when the model's answer is right

Reported as means over the questions (word_mass over those that have it), overall and per family,
with object_lift = object_mass / object_area and box_lift = box_mass / box_area (1 = no better than
a map spread evenly over the image).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import Config, load_config
from ..data.loading import read_split
from ..data.scene import Scene, ShapeObject
from ..data.shapes import object_mask
from .api import Explanation, explain
from .base import ExplainError
from .paint import paint

FAMILIES = ("shape", "left", "top")  # the non-relational families: one object each
METRICS = ("object_mass", "object_area", "box_mass", "box_area", "uniform_mass", "pointing", "correct")


@dataclass
class Item:
    question: str
    image_path: Path
    answer: str | None
    family: str
    scene: Scene
    color: str  # the object the question names


def sanity_items(data: Config, split: str = "test", limit: int | None = 200) -> list[Item]:
    """The split's non-relational questions with their scenes, round-robin over the images."""
    scenes_file = Path(data.data.root).expanduser() / "scenes" / f"{split}_scenes.json"
    if not scenes_file.is_file():
        raise ExplainError(f"{scenes_file}: not found; the sanity check needs the built-in shapes data "
                           "(written by `vlfuse data shapes`), whose scenes file says which object each question names")
    doc = json.loads(scenes_file.read_text(encoding="utf-8"))
    named: dict = {}
    for scene in doc["scenes"]:
        shapes = Scene(doc["size"], tuple(ShapeObject(**o) for o in scene["objects"]))
        for rank, q in enumerate(x for x in scene["questions"] if x["family"] in FAMILIES):
            named[q["question_id"]] = (rank, q["family"], shapes, q["colors"][0])
    items = []
    for position, sample in enumerate(read_split(data.data, split).samples):
        if sample.question_id in named:
            rank, family, scene, color = named[sample.question_id]
            items.append(((rank, position), Item(sample.question, sample.image_path, sample.answer, family,
                                                 scene, color)))
    items.sort(key=lambda pair: pair[0])  # each image's first question, then each one's second, ...
    return [item for _, item in items[:limit]]


def _share(heat: np.ndarray, region: np.ndarray) -> float:
    total = float(heat.sum())
    return float(heat[region].sum()) / total if total > 0 else 0.0


def _box(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    box = np.zeros_like(mask)
    box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
    return box


def measure(result: Explanation, item: Item) -> dict:
    """The per-question numbers (module docstring) for one explanation."""
    pixels = object_mask(item.scene, item.color)
    if result.heatmap.shape != pixels.shape:
        raise ExplainError(f"{item.image_path}: heatmap {result.heatmap.shape} but the scene is "
                           f"{item.scene.size} px square; was the image resized after generation?")
    box = _box(pixels)
    boxes = torch.from_numpy(result.token_boxes)
    uniform = paint(torch.ones(len(boxes)), boxes, pixels.shape).numpy()
    peak = np.unravel_index(int(result.heatmap.argmax()), pixels.shape)
    row = {"object_mass": _share(result.heatmap, pixels), "object_area": float(pixels.mean()),
           "box_mass": _share(result.heatmap, box), "box_area": float(box.mean()),
           "uniform_mass": _share(uniform, pixels),
           "pointing": float(result.heatmap.max() > 0 and bool(box[peak])),
           "correct": float(item.answer is not None and result.answer == item.answer)}
    words = [t.lower() for t in result.tokens]
    if result.per_word is not None and item.color in words:
        row["word_mass"] = _share(result.per_word[words.index(item.color)], pixels)
    return row


def summarise(rows: list[dict]) -> dict:
    if not rows:
        return {"questions": 0}
    out = {"questions": len(rows)} | {k: float(np.mean([r[k] for r in rows])) for k in METRICS}
    out["object_lift"] = out["object_mass"] / out["object_area"] if out["object_area"] else None
    out["box_lift"] = out["box_mass"] / out["box_area"] if out["box_area"] else None
    worded = [r["word_mass"] for r in rows if "word_mass" in r]
    out["word_mass"] = float(np.mean(worded)) if worded else None
    out["word_questions"] = len(worded)
    return out


def measure_all(items: list[Item], explainer: Callable[[Path, str], Explanation]) -> dict:
    """{"overall": summary, "families": {family: summary}} over the items."""
    rows = [(item.family, measure(explainer(item.image_path, item.question), item)) for item in items]
    families = {f: summarise([r for family, r in rows if family == f]) for f in FAMILIES}
    return {"overall": summarise([r for _, r in rows]), "families": {f: s for f, s in families.items()
                                                                     if s["questions"]}}


def explain_sanity(model, data: Config | str | Path | None = None, split: str = "test", limit: int | None = 200,
                   method: str = "attention") -> dict:
    """model: a saved model directory or a Predictor; data: a config (or YAML path) whose data section
    to use, default the model's own. Returns the report (module docstring) with the settings."""
    from ..predict import Predictor, load

    predictor = model if isinstance(model, Predictor) else load(model)
    config = predictor.config if data is None else data if isinstance(data, Config) else load_config(data)
    items = sanity_items(config, split, limit)
    if not items:
        raise ExplainError(f"the {split} split has no {'/'.join(FAMILIES)} questions to check")
    report = measure_all(items, lambda image, question: explain(predictor, image, question, method))
    return {"method": method, "split": split, "data_root": str(config.data.root), **report}
