"""Reader for simple VQA tables: JSON Lines or CSV, one question per line/row.

Each record has `image` (a path inside the image folder: no `..`, not absolute) and `question`,
usually `answer`; optionally `answers`, `question_id` (default: `line-N`, N the line number; an
explicit id of that form is refused, so the two never collide), `image_id` (default: the image path),
`question_type` and `answer_type`. Other keys are kept in `VQASample.extra`. In CSV the
`answers` cell is `|`-separated, and all-digit ids become integers as they would be in JSON.

A `knowledge_graph` field names the row's own knowledge graph (a `.jsonl` or `.csv` file of triples, a
relative path resolved against the table's folder), read with `data.knowledge_graph: per_sample`
(vlfuse.data.knowledge_graph); it must exist, and is kept in `VQASample.extra` as the resolved path.

Multiple-choice tables (task vqa_mc) add `choices`, the candidate answers (a list; in CSV a
`|`-separated cell), among which `answer` must be.

Classification tables (hateful memes, MM-IMDb style) say `text` for the question and `label` (a
string or an integer) for the answer; both spellings are read.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vlfuse.data.formats.common import ReadResult, SkipLog, check_choices, check_question, iter_jsonl, read_text
from vlfuse.data.formats.fields import Where, is_file, relative_path
from vlfuse.data.records import VQASample, majority_answer
from vlfuse.errors import DataError

REQUIRED_COLUMNS = ("image", "question")
ALIASES = {"question": "text", "answer": "label"}  # classification tables' names for the same fields
IMPLICIT_ID, IMPLICIT_ID_FORM = "line-{}", re.compile(r"line-\d+")  # the question_id of a line without one
KNOWN_KEYS = {"image", "question", "answer", "answers", "question_id", "image_id",
              "question_type", "answer_type", "choices", "knowledge_graph", *ALIASES.values()}


def read_vqa_table(path: str | Path, image_root: str | Path | None = None, *,
                   on_bad_sample: str = "error", check_images: bool = True) -> ReadResult:
    """Read a `.jsonl` or `.csv` VQA table, choosing the reader by the file's suffix."""
    path = Path(path)
    readers = {".jsonl": read_vqa_jsonl, ".csv": read_vqa_csv}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"unsupported table format {path.suffix!r} (expected .jsonl or .csv)", path=path)
    return reader(path, image_root, on_bad_sample=on_bad_sample, check_images=check_images)


def read_vqa_jsonl(path: str | Path, image_root: str | Path | None = None, *,
                   on_bad_sample: str = "error", check_images: bool = True) -> ReadResult:
    """Read a JSON Lines VQA table; relative image paths resolve against `image_root`, else
    the file's folder. Blank lines are skipped silently."""
    path = Path(path)
    skipped = SkipLog(on_bad_sample)
    return _read_records(iter_jsonl(path, skipped), path, image_root, skipped, check_images)


def read_vqa_csv(path: str | Path, image_root: str | Path | None = None, *,
                 on_bad_sample: str = "error", check_images: bool = True) -> ReadResult:
    """Read a CSV VQA table with a header row naming the same keys as the JSONL records."""
    path = Path(path)
    skipped = SkipLog(on_bad_sample)
    return _read_records(_iter_csv(path), path, image_root, skipped, check_images,
                         convert=_csv_record)


def _read_records(records: Iterator[tuple[int, Any]], path: Path, image_root: str | Path | None,
                  skipped: SkipLog, check_images: bool,
                  convert: Callable[[Any, int, Path], Any] | None = None) -> ReadResult:
    """Turn (line, record) pairs into samples, applying the bad-sample policy per record.

    `convert` turns a raw row into a JSON-like record; it runs inside the policy so that one
    bad row can be skipped without stopping the file.
    """
    base = Path(image_root) if image_root is not None else path.parent
    samples, seen_ids = [], set()
    for line, record in records:
        try:
            if convert is not None:
                record = convert(record, line, path)
            sample = _sample_from_record(record, line, path, base, check_images)
            if sample.question_id in seen_ids:
                raise DataError(f"duplicate question_id {sample.question_id!r}", path=path, line=line,
                                field="question_id")
            seen_ids.add(sample.question_id)
            samples.append(sample)
        except DataError as error:
            skipped.add(error)
    return ReadResult(samples=samples, skipped=skipped)


def _sample_from_record(record: Any, line: int, path: Path, base: Path, check_images: bool) -> VQASample:
    """One validated VQASample from one parsed record."""
    if not isinstance(record, dict):
        raise DataError(f"expected an object, got {type(record).__name__}", path=path, line=line)
    image_path = _image_path(record, line, path, base, check_images)
    question_key = "text" if "question" not in record and "text" in record else "question"
    question = check_question(_get(record, question_key, line, path), path=path, line=line)
    answers = _answers(record, line, path)
    answer = _optional_str(record, "answer", line, path)
    if answer is None and "answer" not in record:
        answer = _label(record, line, path)
    if answer is None:
        answer = majority_answer(answers)
    elif not answers:
        answers = (answer,)
    choices = record.get("choices")
    if choices is not None:
        choices = check_choices(choices, answer, path=path, line=line, field="choices")
    graph = record.get("knowledge_graph")
    if graph is not None:
        graph = _knowledge_graph_file(graph, Where(path, line, "knowledge_graph"))
    return VQASample(
        question_id=_question_id(record, line, path),
        image_id=_id(record, "image_id", str(record["image"]), line, path),
        image_path=image_path, question=question, answer=answer, answers=answers,
        question_type=_optional_str(record, "question_type", line, path) or "unknown",
        answer_type=_optional_str(record, "answer_type", line, path) or "unknown",
        extra={**({"choices": choices} if choices else {}), **({"knowledge_graph": graph} if graph else {}),
               **{k: v for k, v in record.items() if k not in KNOWN_KEYS}},
    )


def _image_path(record: dict, line: int, path: Path, base: Path, check_images: bool) -> Path:
    image = _get(record, "image", line, path)
    if not isinstance(image, str) or not image.strip():
        raise DataError("image must be a non-empty path string", path=path, line=line, field="image")
    image_path = base / relative_path(image, Where(path, line, "image"), "image")
    if check_images and not is_file(image_path):
        raise DataError(f"image not found: {image_path}", path=path, line=line, field="image")
    return image_path


def _knowledge_graph_file(value: Any, where: Where) -> str:
    """The row's knowledge graph file, below the table's folder: an existing .jsonl or .csv."""
    try:
        graph = where.path.parent / relative_path(value, where, "knowledge_graph")
    except DataError:
        raise where.error(f"knowledge_graph must be a relative path below the table's folder (no '..', not "
                          f"absolute), got {value!r}") from None
    if graph.suffix.lower() not in (".jsonl", ".csv"):
        raise where.error(f"knowledge_graph must name a .jsonl or .csv file of triples, got {value!r}")
    if not is_file(graph):
        raise where.error(f"knowledge graph file not found: {graph}")
    return str(graph)


def _answers(record: dict, line: int, path: Path) -> tuple[str, ...]:
    answers = record.get("answers")
    if answers is None:
        return ()
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise DataError("answers must be a list of strings", path=path, line=line, field="answers")
    return tuple(answers)


def _label(record: dict, line: int, path: Path) -> str | None:
    """`label`: a class name or an integer class (hateful memes' 0/1), read as its string."""
    value = record.get("label")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip():
        raise DataError(f"label must be a non-empty string or an integer, got {value!r}", path=path, line=line,
                        field="label")
    return str(value).strip()


def _id(record: dict, key: str, default: int | str, line: int, path: Path) -> int | str:
    value = record.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DataError(f"{key} must be an integer or a string, got {type(value).__name__}",
                        path=path, line=line, field=key)
    return value


def _question_id(record: dict, line: int, path: Path) -> int | str:
    """The record's question_id, else `line-N`: a form refused in the file, so that an explicit id
    never takes the id of a line that has none."""
    if record.get("question_id") is None:
        return IMPLICIT_ID.format(line)
    value = _id(record, "question_id", line, line, path)
    if isinstance(value, str) and IMPLICIT_ID_FORM.fullmatch(value):
        raise DataError(f"question_id {value!r} has the form given to lines without one; choose another id",
                        path=path, line=line, field="question_id")
    return value


def _get(record: dict, key: str, line: int, path: Path) -> Any:
    if record.get(key) is None:
        raise DataError(f"missing field {key!r}", path=path, line=line, field=key)
    return record[key]


def _optional_str(record: dict, key: str, line: int, path: Path) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise DataError(f"{key} must be a string, got {type(value).__name__}", path=path, line=line,
                        field=key)
    return value


def _iter_csv(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line, raw row) per CSV row; `line` is where the row ends, as csv counts it."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    try:
        header = reader.fieldnames or []
        missing = [key for key in REQUIRED_COLUMNS if key not in header and ALIASES.get(key) not in header]
        if missing:
            raise DataError(f"CSV header lacks column(s) {', '.join(map(repr, missing))}", path=path,
                            line=1, field=missing[0])
        for row in reader:
            yield reader.line_num, row
    except csv.Error as exc:
        raise DataError(f"malformed CSV: {exc}", path=path, line=reader.line_num) from None


def _csv_record(row: dict, line: int, path: Path) -> dict:
    """A CSV row as a JSON-like record: empty optional cells dropped (so they count as missing),
    ids as ints where all digits, answers as a list."""
    if None in row:  # DictReader files surplus cells under the key None
        raise DataError("row has more cells than the header", path=path, line=line)
    record = {key: value for key, value in row.items()
              if value is not None and (value != "" or key in REQUIRED_COLUMNS or key == "text")}
    for key in ("question_id", "image_id"):
        if key in record and record[key].isascii() and record[key].isdigit():
            record[key] = int(record[key])
    for key in ("answers", "choices"):
        if key in record:
            record[key] = record[key].split("|")
    return record
