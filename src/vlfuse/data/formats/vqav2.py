"""Reader for the official VQA v2 layout: a questions JSON, optional annotations JSON, COCO images.

Published files differ in what the annotations carry (some copies keep only `question_id` and
`answers`), so `image_id` comes from the questions file, `answer` falls back to the majority of
`answers`, and the question/answer types default to "unknown".

The multiple-choice questions files (VQA v1's `MultipleChoice_*_questions.json`, and copies of v2
made the same way) give each question `multiple_choices` (18 candidates in VQA v1); they are kept
in `VQASample.extra["choices"]` for task vqa_mc, and `multiple_choice_answer` must be among them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlfuse.data.formats.common import ReadResult, SkipLog, check_choices, check_question, read_json
from vlfuse.data.records import VQASample, majority_answer
from vlfuse.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}
_COCO_ID = re.compile(r"_(\d{12})$")


@dataclass(frozen=True)
class _Question:
    """A structurally valid entry of the questions list."""

    index: int
    question_id: int | str
    image_id: int
    question: str
    choices: tuple[str, ...] | None = None  # multiple-choice files: the candidate answers


@dataclass(frozen=True)
class _Annotation:
    """A structurally valid entry of the annotations list."""

    index: int
    image_id: int | None
    answer: str | None
    answers: tuple[str, ...]
    question_type: str
    answer_type: str


def read_vqa_v2(questions_json: str | Path, annotations_json: str | Path | None = None,
                image_dir: str | Path | None = None, *, on_bad_sample: str = "error",
                check_images: bool = True) -> ReadResult:
    """Read VQA v2 questions (and annotations, if given) into VQASamples.

    `image_dir` defaults to the questions file's folder. Without annotations (test-dev style)
    every sample's answer is None. Bad samples are raised or skipped per `on_bad_sample`.
    """
    skipped = SkipLog(on_bad_sample)
    questions_json = Path(questions_json)
    doc = read_json(questions_json)
    raw_questions = _top_level_list(doc, "questions", questions_json)
    subtype = doc.get("data_subtype") if isinstance(doc.get("data_subtype"), str) else None
    questions, known_ids = _parse_questions(raw_questions, questions_json, skipped)
    annotations, reported = None, set()
    if annotations_json is not None:
        good_ids = {q.question_id for q in questions}
        annotations, reported = _parse_annotations(Path(annotations_json), known_ids, good_ids, skipped)
    images = ImageFiles(Path(image_dir) if image_dir is not None else questions_json.parent,
                         subtype, must_exist=check_images)
    samples = []
    for q in questions:
        if q.question_id in reported:
            continue  # its annotation was bad: counted there as this question's loss
        try:
            samples.append(_build_sample(q, annotations, images, check_images, questions_json))
        except DataError as error:
            skipped.add(error)
    return ReadResult(samples=samples, skipped=skipped)


def _top_level_list(doc: Any, key: str, path: Path) -> list:
    """doc[key], which must be a list; a structural error here is fatal, not a bad sample."""
    if not isinstance(doc, dict):
        raise DataError(f"expected a JSON object with a {key!r} list, got {type(doc).__name__}",
                        path=path)
    if key not in doc:
        raise DataError(f"missing {key!r} list", path=path, field=key)
    if not isinstance(doc[key], list):
        raise DataError(f"{key!r} must be a list, got {type(doc[key]).__name__}", path=path, field=key)
    return doc[key]


def _parse_questions(raw: list, path: Path, skipped: SkipLog) -> tuple[list[_Question], set]:
    """Valid questions in file order, and every question_id seen (so annotations of a bad
    question are not also reported as unknown)."""
    questions, seen = [], set()
    for index, entry in enumerate(raw):
        try:
            qid = _entry_id(entry, "questions", index, path)
            if qid in seen:
                raise DataError(f"duplicate question_id {qid}", path=path,
                                field=f"questions[{index}].question_id")
            seen.add(qid)
            questions.append(_parse_question(entry, index, qid, path))
        except DataError as error:
            skipped.add(error)
    return questions, seen


def _parse_question(entry: dict, index: int, qid: int | str, path: Path) -> _Question:
    where = f"questions[{index}]"
    image_id = _require(entry, "image_id", where, qid, path)
    if not _is_int(image_id):
        raise DataError(f"image_id must be an integer, got {type(image_id).__name__} "
                        f"(question_id {qid})", path=path, field=f"{where}.image_id")
    question = check_question(_require(entry, "question", where, qid, path), path=path,
                              field=f"{where}.question")
    return _Question(index, qid, image_id, question, _choices(entry, where, qid, path))


def _choices(entry: dict, where: str, qid: int | str, path: Path) -> tuple[str, ...] | None:
    """A multiple-choice file's candidates, checked (the answer is checked against them later)."""
    raw = entry.get("multiple_choices")
    return None if raw is None else check_choices(raw, path=path, field=f"{where}.multiple_choices")


def _parse_annotations(path: Path, known_ids: set, good_ids: set,
                       skipped: SkipLog) -> tuple[dict[int | str, _Annotation], set]:
    """Valid annotations by question_id, and the good questions whose annotation was bad.

    Every problem is reported, but the count is of questions lost, each once: a bad annotation
    of a good question costs that question (and is not counted again when it is built); an
    unreadable, unknown or duplicate annotation, or one of a question already reported bad,
    costs none (a question left without an annotation is counted when it is built).
    """
    raw = _top_level_list(read_json(path), "annotations", path)
    annotations: dict[int | str, _Annotation] = {}
    reported: set = set()
    for index, entry in enumerate(raw):
        lost = 0
        try:
            qid = _entry_id(entry, "annotations", index, path)
            field = f"annotations[{index}].question_id"
            if qid in annotations or qid in reported:
                raise DataError(f"duplicate annotation for question_id {qid}", path=path, field=field)
            if qid not in known_ids:
                raise DataError(f"annotation for unknown question_id {qid}", path=path, field=field)
            lost = int(qid in good_ids)
            annotations[qid] = _parse_annotation(entry, index, qid, path)
        except DataError as error:
            if lost:
                reported.add(qid)
            skipped.add(error, samples=lost)
    return annotations, reported


def _parse_annotation(entry: dict, index: int, qid: int | str, path: Path) -> _Annotation:
    where = f"annotations[{index}]"
    raw_answers = _require(entry, "answers", where, qid, path)
    if not isinstance(raw_answers, list) or not raw_answers:
        raise DataError(f"answers must be a non-empty list (question_id {qid})", path=path,
                        field=f"{where}.answers")
    answers = tuple(_answer_text(a, f"{where}.answers[{i}]", qid, path) for i, a in enumerate(raw_answers))
    image_id = entry.get("image_id")
    if image_id is not None and not _is_int(image_id):
        raise DataError(f"image_id must be an integer (question_id {qid})", path=path,
                        field=f"{where}.image_id")
    return _Annotation(
        index=index, image_id=image_id, answers=answers,
        answer=_optional_str(entry, "multiple_choice_answer", where, qid, path) or majority_answer(answers),
        question_type=_optional_str(entry, "question_type", where, qid, path) or "unknown",
        answer_type=_optional_str(entry, "answer_type", where, qid, path) or "unknown",
    )


def _build_sample(q: _Question, annotations: dict | None, images: ImageFiles, check_images: bool,
                  path: Path) -> VQASample:
    """Join a question with its annotation and image; DataError if either is missing."""
    image_path = images.find(q.image_id)
    if image_path is None:
        if check_images:
            raise DataError(f"image not found for image_id {q.image_id} (question_id {q.question_id}) "
                            f"in {images.directory}", path=path, field=f"questions[{q.index}].image_id")
        image_path = images.expected(q.image_id)
    extra = {} if q.choices is None else {"choices": q.choices}
    if annotations is None:
        return VQASample(q.question_id, q.image_id, image_path, q.question, answer=None, extra=extra)
    ann = annotations.get(q.question_id)
    if ann is None:
        raise DataError(f"no annotation for question_id {q.question_id}", path=path,
                        field=f"questions[{q.index}]")
    if ann.image_id is not None and ann.image_id != q.image_id:
        raise DataError(f"annotation image_id {ann.image_id} differs from the question's "
                        f"{q.image_id} (question_id {q.question_id})", path=path,
                        field=f"questions[{q.index}].image_id")
    if q.choices is not None and ann.answer not in q.choices:
        raise DataError(f"the answer {ann.answer!r} is not among multiple_choices (question_id {q.question_id})",
                        path=path, field=f"questions[{q.index}].multiple_choices")
    return VQASample(q.question_id, q.image_id, image_path, q.question, answer=ann.answer,
                     answers=ann.answers, question_type=ann.question_type, answer_type=ann.answer_type, extra=extra)


class ImageFiles:
    """Finds the image file for an image_id; lists the directory once, not once per sample."""

    def __init__(self, directory: Path, subtype: str | None, *, must_exist: bool):
        self.directory = directory
        self.subtype = subtype
        self.by_name: dict[str, Path] = {}
        self.by_id_key: dict[str, Path] = {}
        if not directory.is_dir():
            if must_exist:
                raise DataError("image directory not found", path=directory)
            return
        try:
            listing = sorted(directory.iterdir())
        except OSError as exc:
            raise DataError(f"cannot list image directory: {exc.strerror or exc}", path=directory) from None
        for path in listing:
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                self._add(path)

    def _add(self, path: Path) -> None:
        self.by_name[path.name] = path
        match = _COCO_ID.search(path.stem)
        key = match.group(1) if match else path.stem if path.stem.isdigit() else None
        if key is not None:
            self.by_id_key.setdefault(key, path)  # sorted listing: the first name wins

    def find(self, image_id: int) -> Path | None:
        """COCO name, then any file named by the id, then the built-in generator's name."""
        return (self.by_name.get(self._coco_name(image_id))
                or self.by_id_key.get(f"{image_id:012d}")
                or self.by_id_key.get(str(image_id))
                or self.by_name.get(self._builtin_name(image_id)))

    def expected(self, image_id: int) -> Path:
        """Where the image should be (for unchecked reads): the official COCO name."""
        return self.directory / (self._coco_name(image_id) or f"{image_id:012d}.jpg")

    def _coco_name(self, image_id: int) -> str | None:
        return f"COCO_{self.subtype}_{image_id:012d}.jpg" if self.subtype else None

    def _builtin_name(self, image_id: int) -> str | None:
        return f"{self.subtype}_{image_id:06d}.png" if self.subtype else None


def _entry_id(entry: Any, list_name: str, index: int, path: Path) -> int | str:
    """The entry's question_id, after checking the entry is an object with a usable id."""
    where = f"{list_name}[{index}]"
    if not isinstance(entry, dict):
        raise DataError(f"expected an object, got {type(entry).__name__}", path=path, field=where)
    qid = _require(entry, "question_id", where, None, path)
    if not (_is_int(qid) or (isinstance(qid, str) and qid)):
        raise DataError(f"question_id must be an integer or a non-empty string, got {qid!r:.40}",
                        path=path, field=f"{where}.question_id")
    return qid


def _require(entry: dict, key: str, where: str, qid: int | str | None, path: Path) -> Any:
    if key not in entry:
        of = "" if qid is None else f" (question_id {qid})"
        raise DataError(f"missing field {key!r}{of}", path=path, field=f"{where}.{key}")
    return entry[key]


def _optional_str(entry: dict, key: str, where: str, qid: int | str, path: Path) -> str | None:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise DataError(f"{key} must be a string, got {type(value).__name__} (question_id {qid})",
                        path=path, field=f"{where}.{key}")
    return value


def _answer_text(answer: Any, where: str, qid: int | str, path: Path) -> str:
    """The text of one VQA answer entry ({"answer": ..., "answer_confidence": ..., ...})."""
    if not isinstance(answer, dict) or not isinstance(answer.get("answer"), str):
        raise DataError(f"each answer must be an object with a string 'answer' (question_id {qid})",
                        path=path, field=where)
    return answer["answer"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
