"""Questions about real photos made from COCO instance annotations, written in the VQA v2 layout.

`vlfuse data coco-questions instances_train2017.json --out DIR` reads the objects COCO's annotators
outlined (category and area of every instance) and asks what those annotations answer for sure:

- "how many dogs are there?"            -> the count of that category's instances, 1..10 (type "how many")
                                           (never for a category with a crowd region: its count is unknown)
- "is there a dog?" / "are there any skis?" -> "yes" for each category present, "no" for as many
                                           absent ones, drawn by how often they occur in the file (type "is there")
- "what is the largest object?"         -> the category with the biggest instance (type "what is the largest")
- "what animal is in the picture?"      -> the category, when exactly one of that super-category is
                                           present (type "what <super-category>")

COCO has no colours, attributes or relations, so none of those are asked. Every question has one
answer (a single annotator in effect): score with exact match. The output, DIR/<split>_questions.json
and DIR/<split>_annotations.json, reads with `data.format: vqa_v2`, the images staying where they are
(COCO's file names carry the image id).
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .formats.common import read_json

MAX_COUNT = 10  # counts above this are rare and often miss a few instances: not asked
IRREGULAR_PLURALS = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis",
                     "scissors": "scissors", "skateboard": "skateboards"}
# COCO super-category -> how to ask for its one member ("person", "outdoor", "indoor": not asked)
SUPERCATEGORY_QUESTIONS = {
    "animal": "what animal is in the picture?", "vehicle": "what vehicle is in the picture?",
    "food": "what food is in the picture?", "furniture": "what piece of furniture is in the picture?",
    "electronic": "what electronic device is in the picture?", "appliance": "what appliance is in the picture?",
    "kitchen": "what kitchen item is in the picture?", "sports": "what sports equipment is in the picture?",
    "accessory": "what accessory is in the picture?",
}


@dataclass(frozen=True)
class ImageObjects:
    image_id: int
    file_name: str
    counts: Counter  # category name -> instances (crowd regions left out)
    crowded: frozenset[str]  # categories with a crowd region: present, count unknown
    largest: str | None  # category of the instance with the largest area


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    question_type: str
    answer_type: str


def plural(name: str) -> str:
    if name in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[name]
    return name + ("es" if name.endswith(("s", "sh", "ch", "x")) else "s")


def is_there(name: str) -> str:
    if name in ("skis", "scissors"):  # plural-only nouns
        return f"are there any {name}?"
    return f"is there {'an' if name[0] in 'aeiou' else 'a'} {name}?"


def read_instances(path: str | Path) -> tuple[list[ImageObjects], dict[str, str]]:
    """The annotated images of a COCO instances file (those with at least one object), and each
    category's super-category."""
    path = Path(path)
    doc = read_json(path)
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
            raise DataError(f"not a COCO instances file: no {key!r} list", path=path, field=key)
    try:
        names = {c["id"]: c["name"] for c in doc["categories"]}
        supercategory = {c["name"]: c.get("supercategory", "") for c in doc["categories"]}
        files = {im["id"]: im["file_name"] for im in doc["images"]}
    except (KeyError, TypeError) as exc:
        raise DataError(f"bad category or image entry: missing {exc}", path=path) from None
    counts, crowded, biggest = defaultdict(Counter), defaultdict(set), {}
    for index, ann in enumerate(doc["annotations"]):
        try:
            image, name, area = ann["image_id"], names[ann["category_id"]], float(ann["area"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"bad annotation ({type(exc).__name__}: {exc})", path=path,
                            field=f"annotations[{index}]") from None
        if ann.get("iscrowd"):
            crowded[image].add(name)
        else:
            counts[image][name] += 1
        if area > biggest.get(image, ("", -1.0))[1]:
            biggest[image] = (name, area)
    images = [ImageObjects(i, files[i], counts[i], frozenset(crowded[i]), biggest[i][0])
              for i in sorted(files) if i in biggest]
    return images, supercategory


def image_questions(objects: ImageObjects, supercategory: dict[str, str], frequency: Counter,
                    rng: random.Random) -> list[Question]:
    """Every question the annotations answer for one image (see the module docstring)."""
    present = set(objects.counts) | objects.crowded
    out = [Question(f"how many {plural(c)} are there?", str(n), "how many", "number")
           for c, n in sorted(objects.counts.items()) if c not in objects.crowded and n <= MAX_COUNT]
    out += [Question(is_there(c), "yes", "is there", "yes/no") for c in sorted(present)]
    absent = [c for c in sorted(frequency) if c not in present]
    for c in _draw(absent, [frequency[c] for c in absent], len(present), rng):
        out.append(Question(is_there(c), "no", "is there", "yes/no"))
    if objects.largest:
        out.append(Question("what is the largest object?", objects.largest, "what is the largest", "other"))
    by_super = defaultdict(set)
    for c in present:
        by_super[supercategory.get(c, "")].add(c)
    for sup, members in sorted(by_super.items()):
        if sup in SUPERCATEGORY_QUESTIONS and len(members) == 1:
            out.append(Question(SUPERCATEGORY_QUESTIONS[sup], next(iter(members)), f"what {sup}", "other"))
    return out


def _draw(items: list[str], weights: list[int], k: int, rng: random.Random) -> list[str]:
    """k distinct items, each draw weighted (so frequent categories are asked about when absent too)."""
    items, weights, chosen = list(items), list(weights), []
    while items and len(chosen) < k:
        i = rng.choices(range(len(items)), weights)[0]
        chosen.append(items.pop(i))
        weights.pop(i)
    return chosen


def split_name(path: Path) -> str:
    """instances_train2017.json -> train2017."""
    return path.stem.removeprefix("instances_")


def generate(annotations: str | Path, out_dir: str | Path, split: str | None = None, seed: int = 0) -> dict:
    """Write OUT/<split>_questions.json and OUT/<split>_annotations.json; returns a summary."""
    annotations, out_dir = Path(annotations), Path(out_dir)
    split = split or split_name(annotations)
    images, supercategory = read_instances(annotations)
    frequency = Counter(c for im in images for c in set(im.counts) | im.crowded)
    questions, answers = [], []
    for im in images:
        rng = random.Random(f"{seed}-{im.image_id}")  # an image's questions do not depend on the others
        for k, q in enumerate(image_questions(im, supercategory, frequency, rng)):
            qid = im.image_id * 1000 + k  # VQA v2's numbering
            questions.append({"image_id": im.image_id, "question": q.question, "question_id": qid})
            answers.append({"question_id": qid, "image_id": im.image_id, "question_type": q.question_type,
                            "answer_type": q.answer_type, "multiple_choice_answer": q.answer,
                            "answers": [{"answer": q.answer, "answer_confidence": "yes", "answer_id": 1}]})
    info = {"description": f"questions generated by vlfuse from the COCO instance annotations in {annotations.name}"}
    out_dir.mkdir(parents=True, exist_ok=True)
    common = {"info": info, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": split}
    (out_dir / f"{split}_questions.json").write_text(json.dumps({**common, "questions": questions}), encoding="utf-8")
    (out_dir / f"{split}_annotations.json").write_text(json.dumps({**common, "annotations": answers}),
                                                       encoding="utf-8")
    return {"split": split, "images": len(images), "questions": len(questions),
            "question_types": dict(Counter(a["question_type"] for a in answers).most_common()),
            "answers": len({a["multiple_choice_answer"] for a in answers}), "out": str(out_dir)}
