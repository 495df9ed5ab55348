"""Built-in "Sort-of-CLEVR" data (Santoro et al. 2017): coloured shapes, questions and captions.

Every image holds one object of each colour in COLORS on a white canvas. Questions come in the
paper's three groups (non-relational, binary and ternary relational) and in English or Chinese.
`generate` writes the images plus VQA v2- and COCO-captions-layout JSON, so the readers for real
data serve this data unchanged:

    OUT/images/{split}/{split}_{image_id:06d}.png
    OUT/vqa/{split}_questions.json, OUT/vqa/{split}_annotations.json   (VQA v2 layout)
    OUT/captions/captions_{split}.json                                 (COCO captions layout)
    OUT/scenes/{split}_scenes.json    objects and each question's subject colours
    OUT/dialog/{split}.json           English data: VisDial v1.0 dialogues (shapes_dialog)
    OUT/dataset.json                  manifest

The pure functions (scenes, rendering, questions, captions) are tested apart from file writing.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import Progress

from vlfuse.errors import ConfigError

from .scene import COLORS, MARGIN, PLACES, SHAPES, Scene, ShapeObject

GENERATOR_VERSION = "1"

FAMILIES = ("shape", "left", "top", "closest", "furthest", "count", "closer", "count_closer")
FAMILY_GROUP: dict[str, str] = {
    "shape": "non-relational", "left": "non-relational", "top": "non-relational",
    "closest": "binary", "furthest": "binary", "count": "binary",
    "closer": "ternary", "count_closer": "ternary",
}
ANSWER_TYPE: dict[str, str] = {
    "shape": "other", "left": "yes/no", "top": "yes/no",
    "closest": "other", "furthest": "other", "count": "number",
    "closer": "yes/no", "count_closer": "number",
}
# How many colours each family names; colors[0] is always the object the question is about.
ARITY: dict[str, int] = {family: 1 for family in FAMILIES} | {"closer": 3, "count_closer": 2}
LANGS = ("en", "zh")
SPLITS = ("train", "val", "test")

_TEMPLATES = {
    "en": {
        "shape": "What is the shape of the {0} object?",
        "left": "Is the {0} object on the left?",
        "top": "Is the {0} object at the top?",
        "closest": "What is the shape of the object closest to the {0} object?",
        "furthest": "What is the shape of the object furthest from the {0} object?",
        "count": "How many objects have the same shape as the {0} object?",
        "closer": "Is the {1} object closer to the {0} object than the {2} object is?",
        "count_closer": "How many objects are closer to the {0} object than the {1} object is?",
    },
    "zh": {
        "shape": "{0}物体是什么形状？",
        "left": "{0}物体在左边吗？",
        "top": "{0}物体在上方吗？",
        "closest": "离{0}物体最近的物体是什么形状？",
        "furthest": "离{0}物体最远的物体是什么形状？",
        "count": "有多少个物体与{0}物体形状相同？",
        "closer": "{1}物体比{2}物体离{0}物体更近吗？",
        "count_closer": "有多少个物体比{1}物体离{0}物体更近？",
    },
}
_WORDS = {
    "en": {name: name for name in (*COLORS, *SHAPES, "yes", "no")},
    "zh": {"red": "红色", "green": "绿色", "blue": "蓝色", "orange": "橙色", "gray": "灰色",
           "yellow": "黄色", "circle": "圆形", "square": "正方形", "triangle": "三角形",
           "yes": "是", "no": "否"},
}

_HALF_SIDE = 0.9         # square / triangle box half-side, in radii (side ~1.8 r: area close to the circle's)
_MIDLINE_CLEARANCE = 1.5  # px; keeps left/right and top/bottom unambiguous
_PLACEMENT_TRIES = 1000
_POOL_MIN_IMAGES = 500   # below this, starting worker processes costs more than it saves


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    family: str
    answer_type: str
    colors: tuple[str, ...]

    def __reduce__(self):  # positional pickling: several times faster through the worker pool
        return Question, (self.text, self.answer, self.family, self.answer_type, self.colors)


# --------------------------------------------------------------------------- scenes and pixels

def _check_size(size: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 32:
        raise ConfigError(f"size: must be an integer >= 32, got {size!r}")


def object_radius(size: int) -> int:
    return max(3, round(size * 0.075))


def _reach(o: ShapeObject) -> float:
    """Distance from the centre to the shape's furthest point (square and triangle corners stick out)."""
    return o.radius if o.shape == "circle" else o.radius * _HALF_SIDE * math.sqrt(2)


def _fits(new: ShapeObject, placed: list[ShapeObject], size: int) -> bool:
    if min(abs(new.x - size / 2), abs(new.y - size / 2)) <= _MIDLINE_CLEARANCE:
        return False
    # 2r + 2 between circles; more where corners could touch, so masks never share a pixel.
    return all(math.dist((new.x, new.y), (o.x, o.y)) >= _reach(new) + _reach(o) + 2 for o in placed)


def _place(rng: random.Random, color: str, shape: str, placed: list[ShapeObject],
           size: int) -> ShapeObject | None:
    r = object_radius(size)
    for _ in range(_PLACEMENT_TRIES):
        # 0.1 px steps keep the scenes file short and exact through JSON.
        x, y = (round(rng.uniform(r + 1, size - r - 1), 1) for _ in "xy")
        candidate = ShapeObject(color, shape, x, y, r)
        if _fits(candidate, placed, size):
            return candidate
    return None


def random_scene(rng: random.Random, size: int = 64, n_objects: int = 6) -> Scene:
    """One object per colour (the first `n_objects` of COLORS), random shapes, placed by rejection."""
    _check_size(size)
    if not 1 <= n_objects <= len(COLORS):
        raise ConfigError(f"n_objects: must be between 1 and {len(COLORS)}, got {n_objects!r}")
    while True:  # restart when an unlucky layout leaves no room (rare at 6 objects)
        placed: list[ShapeObject] = []
        for color in list(COLORS)[:n_objects]:
            o = _place(rng, color, rng.choice(SHAPES), placed, size)
            if o is None:
                break
            placed.append(o)
        else:
            return Scene(size, tuple(placed))


def _footprint(o: ShapeObject, size: int) -> tuple[slice, slice, np.ndarray]:
    """The shape's pixels within its bounding box, as (rows, columns, mask of that box)."""
    r = o.radius
    rows = slice(max(0, math.floor(o.y - r)), min(size, math.ceil(o.y + r) + 1))
    cols = slice(max(0, math.floor(o.x - r)), min(size, math.ceil(o.x + r) + 1))
    # A pixel belongs to a shape when its centre does: masks match the rendering exactly.
    dx = np.arange(cols.start, cols.stop) + 0.5 - o.x
    dy = (np.arange(rows.start, rows.stop) + 0.5 - o.y)[:, None]
    h = r * _HALF_SIDE
    if o.shape == "circle":
        mask = dx**2 + dy**2 <= r**2
    elif o.shape == "square":
        mask = (np.abs(dx) <= h) & (np.abs(dy) <= h)
    else:  # upward triangle: apex at the top of the box, half-width growing to h at its bottom
        mask = (np.abs(dy) <= h) & (np.abs(dx) <= (dy + h) / 2)
    return rows, cols, mask


def object_mask(scene: Scene, color: str) -> np.ndarray:
    """Boolean [size, size] mask of the pixels of the object of `color`."""
    rows, cols, mask = _footprint(scene.obj(color), scene.size)
    full = np.zeros((scene.size, scene.size), dtype=bool)
    full[rows, cols] = mask
    return full


def render(scene: Scene) -> Image.Image:
    # Paint object indices, then look colours up once: much faster than painting RGB per object
    # (and np.take is several times faster than fancy indexing with uint8 labels).
    labels = np.zeros((scene.size, scene.size), dtype=np.uint8)
    for k, o in enumerate(scene.objects, start=1):
        rows, cols, mask = _footprint(o, scene.size)
        labels[rows, cols][mask] = k
    palette = np.array([(255, 255, 255), *(COLORS[o.color] for o in scene.objects)], dtype=np.uint8)
    return Image.fromarray(np.take(palette, labels, axis=0), "RGB")


# --------------------------------------------------------------------------- questions

def _check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise ConfigError(f"lang: must be one of {', '.join(LANGS)}, got {lang!r}")


def _check_family(family: str, colors: tuple[str, ...]) -> None:
    if family not in FAMILY_GROUP:
        raise ConfigError(f"family: unknown question family {family!r}; expected one of {', '.join(FAMILIES)}")
    if len(colors) != ARITY[family] or len(set(colors)) != len(colors):
        raise ConfigError(f"colors: {family!r} needs {ARITY[family]} distinct colours, got {colors!r}")


def question_text(family: str, colors: tuple[str, ...], lang: str = "en") -> str:
    """The question; colors[0] is the anchor ("the red object"), then the other objects named."""
    _check_lang(lang)
    _check_family(family, tuple(colors))
    return _TEMPLATES[lang][family].format(*(_WORDS[lang][c] for c in colors))


def _dist(a: ShapeObject, b: ShapeObject) -> float:
    return math.dist((a.x, a.y), (b.x, b.y))


def _extreme_shape(scene: Scene, anchor: ShapeObject, furthest: bool) -> str | None:
    ranked = sorted((_dist(anchor, o), o.shape) for o in scene.objects if o is not anchor)
    if furthest:
        ranked.reverse()
    if not ranked or (len(ranked) > 1 and abs(ranked[0][0] - ranked[1][0]) < MARGIN * scene.size):
        return None
    return ranked[0][1]


def _count_closer(scene: Scene, anchor: ShapeObject, ref: ShapeObject) -> int | None:
    limit = _dist(anchor, ref)
    others = [_dist(anchor, o) for o in scene.objects if o is not anchor and o is not ref]
    if any(abs(d - limit) < MARGIN * scene.size for d in others):
        return None
    return sum(d < limit for d in others)


def _raw_answer(scene: Scene, family: str, objs: list[ShapeObject]) -> str | int | None:
    """The answer as an English word or a count, before localisation; None when ambiguous."""
    a = objs[0]
    if family == "shape":
        return a.shape
    if family in ("left", "top"):
        return "yes" if (a.x if family == "left" else a.y) < scene.size / 2 else "no"
    if family in ("closest", "furthest"):
        return _extreme_shape(scene, a, furthest=family == "furthest")
    if family == "count":
        return sum(o.shape == a.shape for o in scene.objects)  # the subject itself counts
    if family == "closer":
        near, far = _dist(a, objs[1]), _dist(a, objs[2])
        return None if abs(near - far) < MARGIN * scene.size else ("yes" if near < far else "no")
    return _count_closer(scene, a, objs[1])


def answer(scene: Scene, family: str, colors: tuple[str, ...], lang: str = "en") -> str | None:
    """The answer in `lang`, or None when it hinges on distances closer than 3% of the size."""
    _check_lang(lang)
    _check_family(family, tuple(colors))
    return _localised_answer(scene, family, colors, lang)


def _localised_answer(scene: Scene, family: str, colors: tuple[str, ...], lang: str) -> str | None:
    raw = _raw_answer(scene, family, [scene.obj(c) for c in colors])
    if raw is None:
        return None
    return str(raw) if isinstance(raw, int) else _WORDS[lang][raw]


def _askable(scene: Scene, family: str, rng: random.Random, lang: str) -> Iterator[Question]:
    """Every unambiguous question of one family, each once, in random order."""
    combos = list(itertools.permutations([o.color for o in scene.objects], ARITY[family]))
    rng.shuffle(combos)
    for colors in combos:
        reply = _localised_answer(scene, family, colors, lang)
        if reply is not None:
            yield Question(question_text(family, colors, lang), reply, family, ANSWER_TYPE[family], colors)


def _next_question(scene: Scene, rng: random.Random, start: int, pools: dict, lang: str) -> Question | None:
    """The next unasked question, from family `start` or, when that one has none left, the ones after it."""
    for k in range(len(FAMILIES)):
        family = FAMILIES[(start + k) % len(FAMILIES)]
        if family not in pools:
            pools[family] = _askable(scene, family, rng, lang)
        question = next(pools[family], None)
        if question is not None:
            return question
    return None


def ask(scene: Scene, rng: random.Random, n: int, lang: str = "en", offset: int = 0) -> list[Question]:
    """`n` questions rotating through FAMILIES from `offset`, skipping ambiguous ones, no repeats
    until every askable question has been used."""
    _check_lang(lang)
    pools: dict[str, Iterator[Question]] = {}
    questions = []
    for q in range(n):
        question = _next_question(scene, rng, q + offset, pools, lang)
        if question is None:  # all used up: start over, allowing repeats
            pools.clear()
            question = _next_question(scene, rng, q + offset, pools, lang)
        if question is None:
            raise ConfigError("scene: no question can be asked about an empty scene")
        questions.append(question)
    return questions


def caption(scene: Scene, lang: str = "en") -> str:
    """Every object, in COLORS order, with its place on a 3x3 grid."""
    _check_lang(lang)
    parts = []
    for o in sorted(scene.objects, key=lambda o: list(COLORS).index(o.color)):
        row, col = (min(2, int(v * 3 // scene.size)) for v in (o.y, o.x))
        place = PLACES[lang][row][col]
        if lang == "zh":
            parts.append(f"{place}有一个{_WORDS['zh'][o.color]}{_WORDS['zh'][o.shape]}")
        else:
            article = "an" if o.color[0] in "aeiou" else "a"
            parts.append(f"{article} {o.color} {o.shape} {place}")
    return "，".join(parts) + "。" if lang == "zh" else ", ".join(parts)


# --------------------------------------------------------------------------- files

def _check_arguments(images, questions_per_image, lang, size, seed, val_fraction, test_fraction) -> None:
    # questions_per_image stops at 100 because question_id = image_id * 100 + q.
    for name, value, low, high in (("images", images, 1, None), ("questions_per_image", questions_per_image, 1, 100)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low or (high and value > high):
            bound = f"between {low} and {high}" if high else f">= {low}"
            raise ConfigError(f"{name}: must be an integer {bound}, got {value!r}")
    _check_size(size)
    _check_lang(lang)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed: must be an integer, got {seed!r}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
            raise ConfigError(f"{name}: must be a number in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1:
        raise ConfigError("val_fraction: val_fraction + test_fraction must be below 1")


def _split_of_each_image(images: int, val_fraction: float, test_fraction: float) -> list[str]:
    """Split names by image index: test first, then val, then train."""
    n_test = round(test_fraction * images)
    if test_fraction > 0 and images >= 3:
        n_test = max(1, n_test)
    n_val = min(round(val_fraction * images), images - n_test)
    return ["test"] * n_test + ["val"] * n_val + ["train"] * (images - n_test - n_val)


def _make_image(task: tuple) -> dict:
    """Build, render and save one image; the RNG depends only on (seed, index), so order is free."""
    index, split, out, seed, size, n_questions, lang, dialogs = task
    rng = random.Random(f"{seed}:{index}")
    scene = random_scene(rng, size)
    image_id = index + 1
    file_name = f"{split}_{image_id:06d}.png"
    # Level 1 encodes ~40% faster than the default; files grow from ~370 to ~490 bytes.
    render(scene).save(Path(out) / "images" / split / file_name, format="PNG", compress_level=1)
    record = {
        "split": split, "image_id": image_id, "file_name": file_name,
        "objects": [dict(vars(o)) for o in scene.objects],  # asdict deep-copies: slow
        "questions": ask(scene, rng, n_questions, lang, offset=index),
        "caption": caption(scene, lang),
    }
    if dialogs:  # its own random stream: the files above stay byte-identical with or without dialogues
        from vlfuse.data.shapes_dialog import dialog_caption, dialog_rng, make_dialog

        record["dialog"] = make_dialog(scene, dialog_rng(seed, index))
        record["dialog_caption"] = dialog_caption(scene)
    return record


def _build_all(tasks: list[tuple], progress: bool) -> Iterator[dict]:
    with Progress(disable=not progress) as bar:
        job = bar.add_task("Generating shapes", total=len(tasks))
        # Forked workers start at once; elsewhere (Windows) starting them costs more than they save.
        if len(tasks) < _POOL_MIN_IMAGES or "fork" not in multiprocessing.get_all_start_methods():
            for task in tasks:
                yield _make_image(task)
                bar.advance(job)
            return
        # Rendering, PNG encoding and file creation dominate: two workers for two cores; imap keeps order.
        with multiprocessing.get_context("fork").Pool(2) as pool:
            for record in pool.imap(_make_image, tasks, chunksize=64):
                yield record
                bar.advance(job)


def _write_json(path: Path, data: dict, indent: int | None = None) -> None:
    separators = None if indent else (",", ":")
    path.write_text(json.dumps(data, ensure_ascii=False, indent=indent, separators=separators) + "\n",
                    encoding="utf-8")


_INFO = {"description": "vlfuse built-in Sort-of-CLEVR shapes (Santoro et al. 2017)",
         "url": "", "version": GENERATOR_VERSION, "contributor": "vlfuse"}
_LICENSE = {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}


def _write_split(out: Path, split: str, records: list[dict], size: int) -> None:
    questions = [q for r in records for q in r["questions"]]
    ids = [r["image_id"] * 100 + q for r in records for q in range(len(r["questions"]))]
    image_ids = [r["image_id"] for r in records for _ in r["questions"]]
    _write_json(out / "vqa" / f"{split}_questions.json", {
        "info": _INFO, "task_type": "Open-Ended", "data_type": "vlfuse-shapes", "license": _LICENSE,
        "data_subtype": split,
        "questions": [{"image_id": i, "question": q.text, "question_id": qid}
                      for q, qid, i in zip(questions, ids, image_ids)],
    })
    _write_json(out / "vqa" / f"{split}_annotations.json", {
        "info": _INFO, "license": _LICENSE, "data_subtype": split,
        "annotations": [{"question_id": qid, "image_id": i, "question_type": q.family,
                         "answer_type": q.answer_type, "multiple_choice_answer": q.answer,
                         "answers": [{"answer": q.answer, "answer_confidence": "yes", "answer_id": 1}]}
                        for q, qid, i in zip(questions, ids, image_ids)],
    })
    _write_json(out / "captions" / f"captions_{split}.json", {
        "info": _INFO, "licenses": [{"id": 1, **_LICENSE}],
        "images": [{"id": r["image_id"], "file_name": r["file_name"], "width": size, "height": size}
                   for r in records],
        "annotations": [{"id": r["image_id"], "image_id": r["image_id"], "caption": r["caption"]}
                        for r in records],
    })
    # Subject colours per question are kept here so answers and explanations can be checked later.
    _write_json(out / "scenes" / f"{split}_scenes.json", {"size": size, "scenes": [
        {"image_id": r["image_id"], "file_name": r["file_name"], "objects": r["objects"],
         "questions": [{"question_id": r["image_id"] * 100 + q, "family": question.family,
                        "colors": list(question.colors)} for q, question in enumerate(r["questions"])]}
        for r in records]})


def generate(out_dir, images: int = 10000, questions_per_image: int = 20, lang: str = "en", size: int = 64,
             seed: int = 0, val_fraction: float = 0.05, test_fraction: float = 0.05,
             progress: bool = True, dialogs: bool | None = None) -> dict:
    """Write the dataset under `out_dir` (layout in the module docstring) and return its manifest.

    `dialogs` (default: for English data) also writes OUT/dialog/{split}.json, VisDial v1.0 layout
    (see shapes_dialog); every other file is the same with or without them.
    """
    _check_arguments(images, questions_per_image, lang, size, seed, val_fraction, test_fraction)
    if dialogs and lang != "en":
        raise ConfigError(f"dialogs: the dialogues are English only; pass dialogs=False for lang {lang!r}")
    dialogs = lang == "en" if dialogs is None else bool(dialogs)
    out = Path(out_dir)
    for folder in [*(f"images/{s}" for s in SPLITS), "vqa", "captions", "scenes", *(["dialog"] if dialogs else [])]:
        (out / folder).mkdir(parents=True, exist_ok=True)
    splits = _split_of_each_image(images, val_fraction, test_fraction)
    tasks = [(i, split, str(out), seed, size, questions_per_image, lang, dialogs) for i, split in enumerate(splits)]
    records: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for record in _build_all(tasks, progress):
        records[record["split"]].append(record)
    for split in SPLITS:
        _write_split(out, split, records[split], size)
        if dialogs:
            from vlfuse.data.shapes_dialog import visdial_split

            _write_json(out / "dialog" / f"{split}.json", visdial_split(split, records[split]))
    manifest = {
        "name": "vlfuse-shapes", "version": GENERATOR_VERSION, "lang": lang,
        "arguments": {"images": images, "questions_per_image": questions_per_image, "lang": lang, "size": size,
                      "seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction},
        "n_objects": len(COLORS), "colors": list(COLORS), "shapes": list(SHAPES),
        "families": [{"name": f, "group": FAMILY_GROUP[f], "answer_type": ANSWER_TYPE[f]} for f in FAMILIES],
        "splits": {s: {"images": len(records[s]), "questions": sum(len(r["questions"]) for r in records[s])}
                   for s in SPLITS},
    }
    _write_json(out / "dataset.json", manifest, indent=2)
    return manifest
