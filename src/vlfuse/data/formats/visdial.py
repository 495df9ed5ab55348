"""Reader for VisDial v1.0 dialogue files (Das et al. 2017), and the built-in shapes dialogues.

    {"version": "1.0", "split": "val",
     "data": {"questions": [str, ...], "answers": [str, ...],
              "dialogs": [{"image_id": int, "caption": str,
                           "dialog": [{"question": qi, "answer": ai, "answer_options": [ai x 100],
                                       "gt_index": k}, ...]}, ...]}}

Questions and answers are indices into the shared `questions` / `answers` arrays. VisDial's test
split gives only the last round's options and neither `answer` nor `gt_index`: such rounds are
read with answer and gt_index None (nothing to score them against). Where both are given,
`answer_options[gt_index]` must be `answer`. Other fields of a round (the built-in data's
`family`, `reference`) are kept in `DialogRound.extra`; dense relevance (NDCG) files are not read.

Images are found by id in `image_dir` like VQA v2's (COCO names, VisualDialog_val2018_<id>.jpg,
`<id>.jpg`, or the built-in `<split>_<id:06d>.png`); by default `images/<split>/` beside the
folder of the JSON file, the built-in generator's layout. A bad dialogue (a round that points
outside the arrays, a gt_index out of range, a missing field, a missing image) is a bad sample,
reported with the file and field path, e.g. `data.dialogs[3].dialog[2].gt_index`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlfuse.data.formats.common import ReadResult, SkipLog, check_question, read_json
from vlfuse.data.formats.fields import (Where, as_list, as_object, brief, is_int, plain_name, require, required_text,
                                        text)
from vlfuse.data.formats.vqav2 import ImageFiles
from vlfuse.data.records import DialogRound, DialogSample
from vlfuse.errors import DataError

_ROUND_FIELDS = frozenset({"question", "answer", "answer_options", "gt_index"})


def read_visdial(path: str | Path, image_dir: str | Path | None = None, *, on_bad_sample: str = "error",
                 check_images: bool = True) -> ReadResult:
    """Read a VisDial v1.0 JSON file into DialogSamples, in the file's order."""
    skipped = SkipLog(on_bad_sample)
    path = Path(path)
    doc = as_object(read_json(path), Where(path))
    top = Where(path)
    split = "" if doc.get("split") is None else plain_name(doc["split"], top.at("split"), "split")
    data = as_object(require(doc, "data", top), top.at("data"))
    where = top.at("data")
    # Entries of the shared arrays are checked when a round uses them: a bad one costs its rounds only.
    questions = as_list(require(data, "questions", where), where.at("questions"))
    answers = as_list(require(data, "answers", where), where.at("answers"))
    dialogs = as_list(require(data, "dialogs", where), where.at("dialogs"))
    folder = Path(image_dir) if image_dir is not None else path.parent.parent / "images" / split
    images = ImageFiles(folder, split or None, must_exist=check_images)
    samples = []
    for i, entry in enumerate(dialogs):
        try:
            samples.append(_dialog(entry, where.at("dialogs").at(i), questions, answers, images, check_images,
                                   split))
        except DataError as error:
            skipped.add(error)
    return ReadResult(samples=samples, skipped=skipped)


def _dialog(entry: Any, where: Where, questions: list, answers: list, images: ImageFiles, check_images: bool,
            split: str) -> DialogSample:
    entry = as_object(entry, where)
    image_id = require(entry, "image_id", where)
    if not is_int(image_id) or image_id < 0:
        raise where.at("image_id").error(f"image_id must be a non-negative integer, got {brief(image_id)}")
    caption = required_text(entry, "caption", where)
    raw_rounds = as_list(require(entry, "dialog", where), where.at("dialog"))
    if not raw_rounds:
        raise where.at("dialog").error("a dialogue needs at least one round")
    rounds = tuple(_round(r, where.at("dialog").at(t), questions, answers) for t, r in enumerate(raw_rounds))
    image_path = images.find(image_id)
    if image_path is None:
        if check_images:
            raise where.at("image_id").error(f"image not found for image_id {image_id} in {images.directory}")
        image_path = images.expected(image_id)
    extra = {k: v for k, v in entry.items() if k not in ("image_id", "caption", "dialog")}
    return DialogSample(image_id, image_path, caption, rounds, split, extra)


def _lookup(array: list, index: Any, where: Where, array_name: str, what: str) -> str:
    if not is_int(index) or not 0 <= index < len(array):
        raise where.error(f"{what} index must be an integer in [0, {len(array)}) of data.{array_name}, "
                          f"got {brief(index)}")
    return text(array[index], where, f"data.{array_name}[{index}]")


def _round(entry: Any, where: Where, questions: list, answers: list) -> DialogRound:
    entry = as_object(entry, where)
    question = check_question(_lookup(questions, require(entry, "question", where), where.at("question"),
                                      "questions", "question"), path=where.path, field=where.at("question").field)
    raw_options = as_list(require(entry, "answer_options", where), where.at("answer_options"))
    if not raw_options:
        raise where.at("answer_options").error("answer_options is empty")
    options = tuple(_lookup(answers, a, where.at("answer_options").at(k), "answers", "answer option")
                    for k, a in enumerate(raw_options))
    answer = None
    if entry.get("answer") is not None:
        answer = _lookup(answers, entry["answer"], where.at("answer"), "answers", "answer")
    gt_index = entry.get("gt_index")
    if gt_index is not None:
        if not is_int(gt_index) or not 0 <= gt_index < len(options):
            raise where.at("gt_index").error(f"gt_index must be an integer in [0, {len(options)}) (the "
                                             f"answer_options), got {brief(gt_index)}")
        if answer is not None and options[gt_index] != answer:
            raise where.at("gt_index").error(f"answer_options[{gt_index}] is {brief(options[gt_index])}, "
                                             f"not the answer {brief(answer)}")
    elif answer is not None:
        if answer not in options:
            raise where.at("answer_options").error(f"the answer {brief(answer)} is not among the answer_options")
        gt_index = options.index(answer)
    extra = {k: v for k, v in entry.items() if k not in _ROUND_FIELDS}
    return DialogRound(question, answer, options, gt_index, extra)
