"""Sort-of-CLEVR generator: hand-worked answers, rendering, placement and the files `generate` writes."""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlfuse.data import shapes
from vlfuse.data.shapes import (ANSWER_TYPE, COLORS, FAMILIES, FAMILY_GROUP, SHAPES, Scene, ShapeObject, answer,
                                ask, caption, generate, object_mask, question_text, random_scene, render)
from vlfuse.errors import ConfigError

R = 5  # object radius at size 64


def scene_of(*objects: tuple[str, str, float, float], size: int = 64) -> Scene:
    return Scene(size, tuple(ShapeObject(c, s, x, y, R) for c, s, x, y in objects))


# Distances from red: green 12, blue 30, gray 40.05, yellow 48.33, orange 56.57.
SCENE_A = scene_of(
    ("red", "circle", 10, 10), ("green", "square", 22, 10), ("blue", "triangle", 10, 40),
    ("orange", "circle", 50, 50), ("gray", "square", 50, 12), ("yellow", "triangle", 30, 54),
)
# Distances from red: green 20, blue 21 (a 1 px gap, below the 1.92 px margin), gray 32.56,
# yellow 38.83, orange 45.25.
SCENE_B = scene_of(
    ("red", "circle", 16, 16), ("green", "square", 16, 36), ("blue", "triangle", 37, 16),
    ("orange", "square", 48, 48), ("gray", "circle", 48, 10), ("yellow", "triangle", 8, 54),
)

CHINESE = re.compile(r"[\u4e00-\u9fff]")
ZH_WORDS = {"是", "否", "圆形", "正方形", "三角形"}


# --------------------------------------------------------------------------- hand-worked answers

@pytest.mark.parametrize("scene, family, colors, en, zh", [
    (SCENE_A, "shape", ("red",), "circle", "圆形"),
    (SCENE_A, "shape", ("green",), "square", "正方形"),
    (SCENE_A, "shape", ("blue",), "triangle", "三角形"),
    (SCENE_A, "left", ("red",), "yes", "是"),
    (SCENE_A, "left", ("orange",), "no", "否"),
    (SCENE_A, "top", ("gray",), "yes", "是"),
    (SCENE_A, "top", ("yellow",), "no", "否"),
    (SCENE_A, "closest", ("red",), "square", "正方形"),
    (SCENE_A, "closest", ("yellow",), "circle", "圆形"),      # orange 20.4 beats blue 24.4
    (SCENE_A, "furthest", ("red",), "circle", "圆形"),        # orange 56.6 beats yellow 48.3
    (SCENE_A, "count", ("red",), "2", "2"),                   # red and orange, the subject included
    (SCENE_A, "count", ("green",), "2", "2"),
    (SCENE_A, "closer", ("red", "green", "blue"), "yes", "是"),
    (SCENE_A, "closer", ("red", "blue", "green"), "no", "否"),
    (SCENE_A, "count_closer", ("red", "gray"), "2", "2"),     # green and blue
    (SCENE_A, "count_closer", ("red", "orange"), "4", "4"),
    (SCENE_A, "count_closer", ("red", "green"), "0", "0"),
    (SCENE_B, "closest", ("red",), None, None),               # green 20 vs blue 21: ambiguous
    (SCENE_B, "closer", ("red", "green", "blue"), None, None),
    (SCENE_B, "count_closer", ("red", "green"), None, None),  # blue sits within the margin
    (SCENE_B, "furthest", ("red",), "square", "正方形"),
    (SCENE_B, "count_closer", ("red", "gray"), "2", "2"),
])
def test_hand_worked_answers(scene, family, colors, en, zh):
    assert answer(scene, family, colors) == en
    assert answer(scene, family, colors, lang="zh") == zh


def test_margin_is_three_percent_of_the_size():
    # Blue 22 px from red, green 20: a 2 px gap clears the 1.92 px margin at size 64 ...
    clear = replace(SCENE_B, objects=tuple(replace(o, x=38) if o.color == "blue" else o for o in SCENE_B.objects))
    assert answer(clear, "closest", ("red",)) == "square"
    assert answer(clear, "closer", ("red", "green", "blue")) == "yes"
    # ... but not the 3.84 px margin of the same layout on a 128 px canvas.
    assert answer(replace(clear, size=128), "closest", ("red",)) is None


def test_count_includes_the_subject():
    lone = replace(SCENE_A, objects=tuple(replace(o, shape="square") if o.color != "red" else o
                                          for o in SCENE_A.objects))
    assert answer(lone, "count", ("red",)) == "1"
    assert answer(lone, "count", ("blue",)) == "5"
    same = replace(SCENE_A, objects=tuple(replace(o, shape="triangle") for o in SCENE_A.objects))
    assert answer(same, "count", ("red",)) == "6"


@pytest.mark.parametrize("family, colors, en, zh", [
    ("shape", ("red",), "What is the shape of the red object?", "红色物体是什么形状？"),
    ("left", ("red",), "Is the red object on the left?", "红色物体在左边吗？"),
    ("top", ("red",), "Is the red object at the top?", "红色物体在上方吗？"),
    ("closest", ("red",), "What is the shape of the object closest to the red object?", "离红色物体最近的物体是什么形状？"),
    ("furthest", ("red",), "What is the shape of the object furthest from the red object?",
     "离红色物体最远的物体是什么形状？"),
    ("count", ("red",), "How many objects have the same shape as the red object?", "有多少个物体与红色物体形状相同？"),
    ("closer", ("red", "green", "blue"), "Is the green object closer to the red object than the blue object is?",
     "绿色物体比蓝色物体离红色物体更近吗？"),
    ("count_closer", ("red", "blue"), "How many objects are closer to the red object than the blue object is?",
     "有多少个物体比蓝色物体离红色物体更近？"),
])
def test_question_text(family, colors, en, zh):
    assert question_text(family, colors) == en
    assert question_text(family, colors, lang="zh") == zh


def test_family_tables_agree():
    assert set(FAMILIES) == set(FAMILY_GROUP) == set(ANSWER_TYPE)
    assert Counter(FAMILY_GROUP.values()) == {"non-relational": 3, "binary": 3, "ternary": 2}
    assert {f for f, t in ANSWER_TYPE.items() if t == "yes/no"} == {"left", "top", "closer"}
    assert {f for f, t in ANSWER_TYPE.items() if t == "number"} == {"count", "count_closer"}


def test_caption_lists_objects_in_colour_order_with_grid_places():
    expected_en = ("a red circle at the top left, a green square at the top, a blue triangle on the left, "
                   "an orange circle at the bottom right, a gray square at the top right, "
                   "a yellow triangle at the bottom")
    expected_zh = ("左上方有一个红色圆形，上方有一个绿色正方形，左边有一个蓝色三角形，"
                   "右下方有一个橙色圆形，右上方有一个灰色正方形，下方有一个黄色三角形。")
    shuffled = replace(SCENE_A, objects=SCENE_A.objects[::-1])
    assert caption(shuffled) == expected_en
    assert caption(shuffled, lang="zh") == expected_zh


# --------------------------------------------------------------------------- asking

def test_ask_rotates_families_from_the_offset():
    questions = ask(SCENE_A, random.Random(0), 16, offset=3)
    assert [q.family for q in questions] == [FAMILIES[(q + 3) % 8] for q in range(16)]
    assert len({q.text for q in questions}) == 16
    for q in questions:
        assert q.answer == answer(SCENE_A, q.family, q.colors)
        assert q.text == question_text(q.family, q.colors)
        assert q.answer_type == ANSWER_TYPE[q.family]


def test_ask_skips_ambiguous_and_impossible_families():
    questions = ask(SCENE_B, random.Random(1), 40)
    assert all(q.answer == answer(SCENE_B, q.family, q.colors) is not None for q in questions)
    two = scene_of(("red", "circle", 10, 10), ("green", "square", 40, 40))
    questions = ask(two, random.Random(0), 20)
    assert len(questions) == 20 and "closer" not in {q.family for q in questions}  # needs three objects
    # 14 distinct questions exist about two objects: all are used before any repeats.
    assert len({q.text for q in questions[:14]}) == 14


def test_ask_is_deterministic_and_localised():
    a = ask(SCENE_A, random.Random("s"), 20, lang="zh")
    assert a == ask(SCENE_A, random.Random("s"), 20, lang="zh")
    assert all(CHINESE.search(q.text) for q in a)
    assert all(q.answer in ZH_WORDS or q.answer.isdigit() for q in a)


# --------------------------------------------------------------------------- scenes and pixels

def _nominal_area(o: ShapeObject) -> float:
    side = 1.8 * o.radius
    return {"circle": math.pi * o.radius**2, "square": side**2, "triangle": side**2 / 2}[o.shape]


@pytest.mark.parametrize("scene", [SCENE_A, *(random_scene(random.Random(i), size) for i, size in
                                               enumerate((32, 64, 64, 100, 160)))])
def test_render_and_masks(scene):
    pixels = np.asarray(render(scene))
    assert pixels.shape == (scene.size, scene.size, 3)
    covered = np.zeros((scene.size, scene.size), dtype=int)
    for o in scene.objects:
        mask = object_mask(scene, o.color)
        assert mask.dtype == bool and mask.shape == (scene.size, scene.size)
        assert mask[int(o.y), int(o.x)]
        assert tuple(pixels[int(o.y), int(o.x)]) == COLORS[o.color]
        assert 0.7 <= mask.sum() / _nominal_area(o) <= 1.3
        assert (pixels[mask] == COLORS[o.color]).all()
        covered += mask
    assert covered.max() == 1  # no two objects share a pixel
    assert (pixels[covered == 0] == 255).all()


@pytest.mark.parametrize("size", [32, 64, 100])
def test_placement_constraints(size):
    r = max(3, round(size * 0.075))
    for i in range(150):
        scene = random_scene(random.Random(f"place:{i}"), size)
        assert [o.color for o in scene.objects] == list(COLORS)
        for o in scene.objects:
            assert o.shape in SHAPES and o.radius == r
            assert r + 1 <= o.x <= size - r - 1 and r + 1 <= o.y <= size - r - 1
            assert abs(o.x - size / 2) >= 1.5 and abs(o.y - size / 2) >= 1.5
        for a in scene.objects:
            for b in scene.objects:
                if a is not b:
                    assert math.dist((a.x, a.y), (b.x, b.y)) >= 2 * r + 2
        assert sum(object_mask(scene, c).astype(int) for c in COLORS).max() == 1


def test_random_scene_is_deterministic():
    assert random_scene(random.Random("x")) == random_scene(random.Random("x"))
    assert random_scene(random.Random("x")) != random_scene(random.Random("y"))
    assert len(random_scene(random.Random(0), n_objects=3).objects) == 3


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("kwargs, name", [
    ({"images": 0}, "images"), ({"images": 2.5}, "images"),
    ({"questions_per_image": 0}, "questions_per_image"), ({"questions_per_image": 101}, "questions_per_image"),
    ({"size": 31}, "size"), ({"lang": "fr"}, "lang"), ({"seed": "zero"}, "seed"),
    ({"val_fraction": 1.5}, "val_fraction"), ({"test_fraction": -0.1}, "test_fraction"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction"),
])
def test_generate_validates_arguments(tmp_path, kwargs, name):
    with pytest.raises(ConfigError, match=name):
        generate(tmp_path, **{"images": 5, "progress": False, **kwargs})
    assert not (tmp_path / "dataset.json").exists()


def test_pure_functions_validate_arguments():
    with pytest.raises(ConfigError, match="family"):
        answer(SCENE_A, "colour", ("red",))
    with pytest.raises(ConfigError, match="colors"):
        answer(SCENE_A, "closer", ("red", "green"))
    with pytest.raises(ConfigError, match="colors"):
        question_text("closer", ("red", "red", "blue"))
    with pytest.raises(ConfigError, match="lang"):
        caption(SCENE_A, lang="de")
    with pytest.raises(ConfigError, match="n_objects"):
        random_scene(random.Random(0), n_objects=7)


# --------------------------------------------------------------------------- files

def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def zh_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("zh")
    manifest = generate(out, images=40, questions_per_image=12, lang="zh", seed=7,
                        val_fraction=0.1, test_fraction=0.2, progress=False)
    return out, manifest


def test_generate_is_deterministic(tmp_path, monkeypatch):
    args = {"images": 24, "questions_per_image": 8, "seed": 3, "progress": False}
    generate(tmp_path / "a", **args)
    generate(tmp_path / "b", **args)
    first = _files(tmp_path / "a")
    assert _files(tmp_path / "b") == first
    monkeypatch.setattr(shapes, "_POOL_MIN_IMAGES", 1)  # the worker pool must give the same bytes
    generate(tmp_path / "pool", **args)
    assert _files(tmp_path / "pool") == first
    generate(tmp_path / "other", **{**args, "seed": 4})
    other = _files(tmp_path / "other")
    assert other.keys() == first.keys()
    assert other["vqa/train_questions.json"] != first["vqa/train_questions.json"]
    assert other["images/train/train_000010.png"] != first["images/train/train_000010.png"]


def test_each_image_depends_only_on_seed_and_index(zh_data):
    out, _ = zh_data
    for split in ("train", "test"):
        for record in _json(out / "scenes" / f"{split}_scenes.json")["scenes"][:3]:
            expected = random_scene(random.Random(f"7:{record['image_id'] - 1}"), 64)
            assert [ShapeObject(**o) for o in record["objects"]] == list(expected.objects)


@pytest.mark.parametrize("images, counts", [(40, {"test": 8, "val": 4, "train": 28}),
                                            (3, {"test": 1, "val": 0, "train": 2}),
                                            (1, {"test": 0, "val": 0, "train": 1})])
def test_split_counts(tmp_path, images, counts):
    manifest = generate(tmp_path, images=images, questions_per_image=2, val_fraction=0.1, test_fraction=0.2,
                        progress=False)
    assert {s: c["images"] for s, c in manifest["splits"].items()} == counts
    for split, n in counts.items():
        assert len(list((tmp_path / "images" / split).glob("*.png"))) == n
        assert len(_json(tmp_path / "vqa" / f"{split}_questions.json")["questions"]) == 2 * n


def test_split_order_and_ids(zh_data):
    out, manifest = zh_data
    ids = {}
    for split in ("test", "val", "train"):
        images = _json(out / "captions" / f"captions_{split}.json")["images"]
        ids[split] = [i["id"] for i in images]
        assert all(i["file_name"] == f"{split}_{i['id']:06d}.png" for i in images)
        assert all((out / "images" / split / i["file_name"]).is_file() for i in images)
        questions = _json(out / "vqa" / f"{split}_questions.json")["questions"]
        assert manifest["splits"][split] == {"images": len(images), "questions": len(questions)}
    assert ids["test"] + ids["val"] + ids["train"] == list(range(1, 41))
    question_ids = [q["question_id"] for split in ("test", "val", "train")
                    for q in _json(out / "vqa" / f"{split}_questions.json")["questions"]]
    assert len(question_ids) == len(set(question_ids)) == 40 * 12
    assert {qid // 100 for qid in question_ids} == set(range(1, 41))
    assert {qid % 100 for qid in question_ids} == set(range(12))


def test_json_layouts_follow_the_official_keys(zh_data):
    out, manifest = zh_data
    questions = _json(out / "vqa" / "val_questions.json")
    assert set(questions) == {"info", "task_type", "data_type", "license", "data_subtype", "questions"}
    assert questions["task_type"] == "Open-Ended" and questions["data_subtype"] == "val"
    assert set(questions["questions"][0]) == {"image_id", "question", "question_id"}
    annotations = _json(out / "vqa" / "val_annotations.json")
    assert set(annotations) == {"info", "license", "data_subtype", "annotations"}
    assert set(annotations["annotations"][0]) == {"question_id", "image_id", "question_type", "answer_type",
                                                  "multiple_choice_answer", "answers"}
    assert set(annotations["annotations"][0]["answers"][0]) == {"answer", "answer_confidence", "answer_id"}
    captions = _json(out / "captions" / "captions_val.json")
    assert set(captions) == {"info", "licenses", "images", "annotations"}
    assert set(captions["images"][0]) == {"id", "file_name", "width", "height"}
    assert set(captions["annotations"][0]) == {"id", "image_id", "caption"}
    assert _json(out / "dataset.json") == manifest
    assert manifest["name"] == "vlfuse-shapes" and manifest["lang"] == "zh"
    assert manifest["arguments"]["seed"] == 7
    assert {f["name"]: f["group"] for f in manifest["families"]} == FAMILY_GROUP
    assert b"\\u" not in (out / "vqa" / "val_questions.json").read_bytes()  # real UTF-8, not escapes


def test_saved_answers_match_recomputed_ones(zh_data):
    out, _ = zh_data
    for split in ("train", "val", "test"):
        saved = _json(out / "scenes" / f"{split}_scenes.json")
        texts = {q["question_id"]: q["question"] for q in _json(out / "vqa" / f"{split}_questions.json")["questions"]}
        notes = {a["question_id"]: a for a in _json(out / "vqa" / f"{split}_annotations.json")["annotations"]}
        for record in saved["scenes"]:
            scene = Scene(saved["size"], tuple(ShapeObject(**o) for o in record["objects"]))
            assert Image.open(out / "images" / split / record["file_name"]).tobytes() == render(scene).tobytes()
            for q in record["questions"]:
                note, colors = notes[q["question_id"]], tuple(q["colors"])
                assert note["question_type"] == q["family"] and note["answer_type"] == ANSWER_TYPE[q["family"]]
                assert note["multiple_choice_answer"] == answer(scene, q["family"], colors, lang="zh")
                assert note["answers"] == [{"answer": note["multiple_choice_answer"], "answer_confidence": "yes",
                                            "answer_id": 1}]
                assert texts[q["question_id"]] == question_text(q["family"], colors, lang="zh")


def test_zh_text_is_chinese(zh_data):
    out, _ = zh_data
    questions = _json(out / "vqa" / "train_questions.json")["questions"]
    answers = [a["multiple_choice_answer"] for a in _json(out / "vqa" / "train_annotations.json")["annotations"]]
    captions = [c["caption"] for c in _json(out / "captions" / "captions_train.json")["annotations"]]
    assert all(CHINESE.search(q["question"]) for q in questions)
    assert all(a in ZH_WORDS or a.isdigit() for a in answers)
    assert all(CHINESE.search(c) and c.endswith("。") for c in captions)


def test_families_are_balanced(zh_data):
    out, _ = zh_data
    families = Counter(a["question_type"] for a in _json(out / "vqa" / "train_annotations.json")["annotations"])
    expected = sum(families.values()) / len(FAMILIES)
    assert set(families) == set(FAMILIES)
    assert all(0.8 * expected <= n <= 1.2 * expected for n in families.values())
