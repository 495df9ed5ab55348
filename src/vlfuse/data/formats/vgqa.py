"""Reader for Visual Genome QA (`question_answers.json`): a list of images, each with its `qas`.

Each image is `{"id", "qas": [{"qa_id", "image_id", "question", "answer", "q_objects",
"a_objects"}]}` (some copies name the image's id `image_id`). Visual Genome answers are written
as sentences ("Sailboats."), so the trailing full stop is dropped from the answer (the original
is kept in `extra["raw_answer"]`). question_type is the question's "W" (what, where, when, who,
why, how, which), the breakdown the Visual Genome paper reports, else "other". Images are
`<id>.jpg` directly in `image_dir` or in its `VG_100K/` / `VG_100K_2/` halves, as published.
"""

from __future__ import annotations

from pathlib import Path

from vlfuse.data.formats.common import ReadResult, SkipLog, read_json
from vlfuse.data.formats.fields import (Where, add_unique, as_list, as_object, brief, extra_fields, identifier, image_folder,
                                        is_file, plain_name, question_text, require, required_text)
from vlfuse.data.records import VQASample
from vlfuse.errors import DataError

W_WORDS = ("what", "where", "when", "who", "why", "how", "which")
IMAGE_SUBFOLDERS = ("", "VG_100K", "VG_100K_2")
_USED = frozenset({"qa_id", "image_id", "question", "answer"})


def read_vgqa(qa_json: str | Path, image_dir: str | Path | None = None, *, on_bad_sample: str = "error",
              check_images: bool = True) -> ReadResult:
    """Read Visual Genome question–answer pairs; `image_dir` defaults to the JSON file's folder.

    An image entry that is malformed or whose image file is missing costs all of its questions.
    """
    skipped = SkipLog(on_bad_sample)
    path = Path(qa_json)
    doc = read_json(path)
    if not isinstance(doc, list):
        raise DataError(f"expected a JSON list of images with 'qas', got {type(doc).__name__}", path=path)
    folder = image_folder(Path(image_dir) if image_dir is not None else path.parent, check_images)
    samples, seen = [], set()
    for index, raw in enumerate(doc):
        where = Where(path, field=f"[{index}]")
        qas = raw.get("qas") if isinstance(raw, dict) else None
        try:
            image_id, image_path, qas = _image(raw, where, folder, check_images)
        except DataError as error:
            skipped.add(error, samples=max(len(qas) if isinstance(qas, list) else 1, 1))
            continue
        for number, qa in enumerate(qas):
            add_unique(lambda at: _sample(qa, at, image_id, image_path), where.at("qas").at(number), "qa_id",
                       seen, samples, skipped)
    return ReadResult(samples=samples, skipped=skipped)


def _image(raw: object, where: Where, folder: Path, check_images: bool) -> tuple[int | str, Path, list]:
    """(image id, image file, qas list) of one image entry."""
    entry = as_object(raw, where)
    key = "image_id" if "id" not in entry and "image_id" in entry else "id"
    image_id = identifier(entry, key, where)
    qas = as_list(require(entry, "qas", where), where.at("qas"))
    name = plain_name(f"{image_id}.jpg", where.at(key), key)
    found = next((folder / sub / name for sub in IMAGE_SUBFOLDERS if is_file(folder / sub / name)), None)
    if found is None:
        if check_images:
            raise where.error(f"image not found for image id {image_id} in {folder}")
        found = folder / name
    return image_id, found, qas


def _sample(raw: object, where: Where, image_id: int | str, image_path: Path) -> VQASample:
    qa = as_object(raw, where)
    own_image = qa.get("image_id")
    if own_image is not None and own_image != image_id:
        raise where.at("image_id").error(f"image_id {brief(own_image)} differs from its image entry's id {image_id}")
    qid = identifier(qa, "qa_id", where)
    question = question_text(qa, "question", where)
    raw_answer = required_text(qa, "answer", where, "answer")
    answer = raw_answer.rstrip(". ") or raw_answer  # "." alone stays an answer rather than becoming empty
    first = question.split()[0].lower().strip("?,")
    return VQASample(question_id=qid, image_id=image_id, image_path=image_path,
                     question=question, answer=answer, answers=(answer,),
                     question_type=first if first in W_WORDS else "other",
                     extra={"raw_answer": raw_answer, **extra_fields(qa, _USED)})
