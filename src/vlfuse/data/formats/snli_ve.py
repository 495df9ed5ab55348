"""Reader for SNLI-VE (visual entailment): JSON Lines of SNLI pairs whose premise is a Flickr30k image.

Each row has `Flickr30K_ID`, `sentence2` (the hypothesis, which becomes the question),
`gold_label` (entailment / neutral / contradiction: the answer), `annotator_labels` (every
annotator's label: the answers), `pairID` (the question id) and `sentence1`, the text premise
SNLI had (the image's caption), kept in `extra["premise"]` with the parses and `captionID`.
Images are `<Flickr30K_ID>.jpg`. A row whose gold label is SNLI's "-" (no annotator majority)
is a bad sample.
"""

from __future__ import annotations

from pathlib import Path

from vlfuse.data.formats.common import ReadResult, SkipLog
from vlfuse.data.formats.fields import (Where, as_list, as_object, brief, extra_fields, identifier, image_file,
                                        image_folder, plain_name, question_text, read_unique_lines, required_text, text)
from vlfuse.data.records import VQASample

LABELS = ("entailment", "neutral", "contradiction")
_USED = frozenset({"Flickr30K_ID", "sentence1", "sentence2", "gold_label", "annotator_labels", "pairID"})


def read_snli_ve(path: str | Path, image_dir: str | Path | None = None, *, on_bad_sample: str = "error",
                 check_images: bool = True) -> ReadResult:
    """Read an SNLI-VE split (`snli_ve_train.jsonl`, ...); `image_dir` defaults to
    `flickr30k_images/` beside the file, the layout SNLI-VE's scripts make."""
    skipped = SkipLog(on_bad_sample)
    path = Path(path)
    folder = image_folder(Path(image_dir) if image_dir is not None else path.parent / "flickr30k_images",
                          check_images)
    samples = read_unique_lines(path, skipped, lambda row, where: _sample(row, where, folder, check_images),
                                "pairID")
    return ReadResult(samples=samples, skipped=skipped)


def _sample(row: object, where: Where, folder: Path, check_images: bool) -> VQASample:
    row = as_object(row, where)
    image_id = identifier(row, "Flickr30K_ID", where)
    name = plain_name(f"{image_id}.jpg", where.at("Flickr30K_ID"), "Flickr30K_ID")
    image_path = image_file(folder / name, where.at("Flickr30K_ID"), check_images,
                            what=f"image for Flickr30K_ID {image_id}")
    answer = _label(row.get("gold_label"), where.at("gold_label"))
    votes = row.get("annotator_labels")
    answers = (answer,) if votes is None else tuple(
        text(v, where.at("annotator_labels").at(i), "annotator label")
        for i, v in enumerate(as_list(votes, where.at("annotator_labels"))))
    premise = None if row.get("sentence1") is None else required_text(row, "sentence1", where, "premise")
    return VQASample(question_id=identifier(row, "pairID", where) if "pairID" in row else where.line,
                     image_id=image_id, image_path=image_path, question=question_text(row, "sentence2", where),
                     answer=answer, answers=answers, question_type="snli_ve", answer_type="entailment",
                     extra={"premise": premise, **extra_fields(row, _USED)})


def _label(value: object, where: Where) -> str:
    if value is None:
        raise where.error("missing field 'gold_label'")
    if value not in LABELS:
        raise where.error(f"gold_label must be one of {', '.join(LABELS)}; got {brief(value)}"
                          + (" (no annotator majority)" if value == "-" else ""))
    return value
