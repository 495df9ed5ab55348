"""Reader for GQA questions: `{question_id: {"imageId", "question", "answer", "types", ...}}`.

The questions come as one JSON file or a folder of them (GQA ships `train_all_questions/` as ten
shards); images are `<imageId>.jpg` in one folder. When `types` is present, question_type is its
semantic family (rel, attr, obj, cat, global) and answer_type its structural one (query, verify,
logical, choose, compare), the two breakdowns GQA reports. Test and challenge questions carry no
answer (answer None). Every other field (fullAnswer, the semantic program, isBalanced, groups,
...) is kept in `extra` under its own name.
"""

from __future__ import annotations

from pathlib import Path

from vlfuse.data.formats.common import ReadResult, SkipLog, read_json
from vlfuse.data.formats.fields import (Where, as_object, extra_fields, image_file, image_folder, optional_text,
                                        plain_name, question_text, require)
from vlfuse.data.records import VQASample
from vlfuse.errors import DataError

_USED = frozenset({"question", "answer", "imageId"})


def read_gqa(questions: str | Path, image_dir: str | Path | None = None, *, on_bad_sample: str = "error",
             check_images: bool = True) -> ReadResult:
    """Read GQA questions (a file, or a folder of `*.json` shards read in name order).

    `image_dir` defaults to the folder holding the questions. A question id seen twice, even in
    two shards, is a bad sample.
    """
    skipped = SkipLog(on_bad_sample)
    questions = Path(questions)
    files = _question_files(questions)
    folder = Path(image_dir) if image_dir is not None else (questions if questions.is_dir() else questions.parent)
    image_folder(folder, check_images)
    samples, seen = [], set()
    for path in files:
        doc = read_json(path)
        if not isinstance(doc, dict):
            raise DataError(f"expected a JSON object mapping question ids to questions, got {type(doc).__name__}",
                            path=path)
        for qid, entry in doc.items():
            where = Where(path, field=qid)
            try:
                if qid in seen:
                    raise where.error(f"duplicate question id {qid!r}")
                seen.add(qid)
                samples.append(_sample(qid, entry, where, folder, check_images))
            except DataError as error:
                skipped.add(error)
    return ReadResult(samples=samples, skipped=skipped)


def _question_files(questions: Path) -> list[Path]:
    if not questions.is_dir():
        return [questions]  # read_json names a missing file
    files = sorted(p for p in questions.iterdir() if p.suffix.lower() == ".json" and p.is_file())
    if not files:
        raise DataError("no .json question files in this folder", path=questions)
    return files


def _sample(qid: str, entry: object, where: Where, folder: Path, check_images: bool) -> VQASample:
    entry = as_object(entry, where)
    if not qid.strip():
        raise where.error("empty question id")
    image_id = plain_name(require(entry, "imageId", where), where.at("imageId"), "imageId")
    image_path = image_file(folder / f"{image_id}.jpg", where.at("imageId"), check_images,
                            what=f"image for imageId {image_id!r}")
    answer = optional_text(entry, "answer", where)
    question_type, answer_type = _types(entry, where)
    return VQASample(question_id=qid, image_id=image_id, image_path=image_path,
                     question=question_text(entry, "question", where), answer=answer,
                     answers=() if answer is None else (answer,), question_type=question_type,
                     answer_type=answer_type, extra=extra_fields(entry, _USED))


def _types(entry: dict, where: Where) -> tuple[str, str]:
    """(semantic, structural) from `types`, "unknown" where absent."""
    if entry.get("types") is None:
        return "unknown", "unknown"
    types = as_object(entry["types"], where.at("types"))
    return (optional_text(types, "semantic", where.at("types")) or "unknown",
            optional_text(types, "structural", where.at("types")) or "unknown")
