"""Reader for Visual7W "telling" (`dataset_v7w_telling.json`, Zhu et al. 2016): multiple-choice QA.

`{"images": [{"filename", "image_id", "split", "qa_pairs": [{"qa_id", "image_id"?, "question",
"answer", "multiple_choices": [three wrong answers], "type"}]}]}`: one file holds every split
("train", "val", "test"), images are `images/<filename>` beside it (`v7w_<image_id>.jpg`).

Each question becomes a VQASample whose `extra["choices"]` are the candidates, the true answer
first (the task shuffles them; the toolkit's data provider does the same), and whose question_type
is the question's W (`type`: what, where, when, who, why, how). Answers are compared as written
("A dog."): the toolkit's exact-match evaluation.
"""

from __future__ import annotations

from pathlib import Path

from vlfuse.data.formats.common import ReadResult, SkipLog, check_choices, read_json
from vlfuse.data.formats.fields import (Where, add_unique, as_list, as_object, extra_fields, identifier, image_file, image_folder,
                                        plain_name, question_text, require, required_text, text)
from vlfuse.data.records import VQASample
from vlfuse.errors import DataError

SPLITS = ("train", "val", "test")
_USED = frozenset({"qa_id", "image_id", "question", "answer", "multiple_choices", "type"})


def read_v7w(path: str | Path, image_dir: str | Path | None = None, *, split: str | None = None,
             on_bad_sample: str = "error", check_images: bool = True) -> ReadResult:
    """The questions of the images of `split` (None: every split); `image_dir` defaults to `images/`
    beside the file (else the file's folder). A bad image entry costs all of its questions."""
    path = Path(path)
    if split is not None and split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}", path=path)
    skipped = SkipLog(on_bad_sample)
    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DataError("expected a JSON object with an 'images' list (Visual7W layout)", path=path, field="images")
    default = path.parent / "images"
    folder = image_folder(Path(image_dir) if image_dir is not None else default if default.is_dir() else path.parent,
                          check_images)
    samples, seen = [], set()
    for index, raw in enumerate(doc["images"]):
        where = Where(path, field=f"images[{index}]")
        pairs = raw.get("qa_pairs") if isinstance(raw, dict) else None
        try:
            entry = as_object(raw, where)
            if split is not None and required_text(entry, "split", where) != split:
                continue
            image_id, image_path, pairs = _image(entry, where, folder, check_images)
        except DataError as error:
            skipped.add(error, samples=max(len(pairs) if isinstance(pairs, list) else 1, 1))
            continue
        for number, qa in enumerate(pairs):
            add_unique(lambda at: _sample(qa, at, image_id, image_path), where.at("qa_pairs").at(number), "qa_id",
                       seen, samples, skipped)
    return ReadResult(samples=samples, skipped=skipped)


def _image(entry: dict, where: Where, folder: Path, check_images: bool) -> tuple[int | str, Path, list]:
    image_id = identifier(entry, "image_id", where)
    name = plain_name(require(entry, "filename", where), where.at("filename"), "filename")
    pairs = as_list(require(entry, "qa_pairs", where), where.at("qa_pairs"))
    return image_id, image_file(folder / name, where.at("filename"), check_images), pairs


def _sample(raw: object, where: Where, image_id: int | str, image_path: Path) -> VQASample:
    qa = as_object(raw, where)
    own_image = qa.get("image_id")
    if own_image is not None and own_image != image_id:
        raise where.at("image_id").error(f"image_id {own_image!r} differs from its image entry's {image_id!r}")
    answer = required_text(qa, "answer", where)
    at = where.at("multiple_choices")
    wrong = as_list(require(qa, "multiple_choices", where), at)
    if not wrong:
        raise at.error("multiple_choices is empty: a question needs wrong answers")
    choices = check_choices([answer, *wrong], path=at.path, field=at.field)  # the answer once, first
    kind = qa.get("type")
    return VQASample(question_id=identifier(qa, "qa_id", where), image_id=image_id, image_path=image_path,
                     question=question_text(qa, "question", where), answer=answer, answers=(answer,),
                     question_type=text(kind, where.at("type"), "type").lower() if kind is not None else "unknown",
                     extra={"choices": choices, **extra_fields(qa, _USED)})

