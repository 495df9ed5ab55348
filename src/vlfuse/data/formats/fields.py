"""Typed field access for the readers of published formats.

Every wrong value becomes a DataError saying where it is: the file, the line (JSON Lines) and
the field path inside the document (`images[3].sentences[0].raw`), so a user can go straight to it.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlfuse.data.formats.common import check_encodable, check_question
from vlfuse.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")

_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlist, _BRIEF.maxdict = 2, 40, 40, 4, 4


def brief(value: Any) -> str:
    """A short repr for messages: bounded in length and depth, whatever the data holds."""
    return _BRIEF.repr(value)


@dataclass(frozen=True)
class Where:
    """A spot in an input file: the file, a line (JSON Lines) and a field path (JSON documents)."""

    path: Path
    line: int | None = None
    field: str | None = None

    def at(self, key: str | int) -> Where:
        """The spot of `key` inside this one: `.key` for an object member, `[key]` for a list item."""
        step = f"[{key}]" if isinstance(key, int) else key
        if self.field is None:
            return Where(self.path, self.line, step)
        return Where(self.path, self.line, f"{self.field}{step}" if isinstance(key, int) else f"{self.field}.{step}")

    def error(self, reason: str) -> DataError:
        return DataError(reason, path=self.path, line=self.line, field=self.field)


def as_object(value: Any, where: Where) -> dict:
    if not isinstance(value, dict):
        raise where.error(f"expected an object, got {type(value).__name__}")
    return value


def as_list(value: Any, where: Where) -> list:
    if not isinstance(value, list):
        raise where.error(f"expected a list, got {type(value).__name__}")
    return value


def require(entry: dict, key: str, where: Where) -> Any:
    """entry[key]; a missing key or a JSON null is a missing field."""
    if entry.get(key) is None:
        raise where.at(key).error(f"missing field {key!r}")
    return entry[key]


def text(value: Any, where: Where, what: str) -> str:
    """A non-empty string with surrounding whitespace stripped (captions, answers, labels)."""
    if not isinstance(value, str):
        raise where.error(f"{what} must be a string, got {type(value).__name__}")
    check_encodable(value, path=where.path, line=where.line, field=where.field)  # a tokenizer would refuse it
    value = value.strip()
    if not value:
        raise where.error(f"empty {what}")
    return value


def required_text(entry: dict, key: str, where: Where, what: str | None = None) -> str:
    return text(require(entry, key, where), where.at(key), what or key)


def optional_text(entry: dict, key: str, where: Where) -> str | None:
    return None if entry.get(key) is None else required_text(entry, key, where)


def question_text(entry: dict, key: str, where: Where) -> str:
    """A question (or statement, or hypothesis): checked as every reader checks questions."""
    return check_question(require(entry, key, where), path=where.path, line=where.line,
                          field=where.at(key).field)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def identifier(entry: dict, key: str, where: Where) -> int | str:
    """An id: an integer or a non-empty string, kept as the file has it."""
    value = require(entry, key, where)
    if is_int(value) or (isinstance(value, str) and value.strip()):
        return value
    raise where.at(key).error(f"{key} must be an integer or a non-empty string, got {brief(value)}")


def plain_name(value: Any, where: Where, what: str) -> str:
    """A single path component (a folder or file name from the data): never `..`, `/` or empty,
    so data cannot point a reader outside its image folder."""
    name = str(value) if is_int(value) else value
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\0" in name:
        raise where.error(f"{what} must be a plain file or folder name, got {brief(value)}")
    return name


def relative_path(value: Any, where: Where, what: str) -> Path:
    """A path below the data's image folder, `a/b.jpg`: each part a plain_name (`.` parts dropped), so
    data cannot reach outside the folder with `..` or an absolute path."""
    parts = [part for part in value.split("/") if part != "."] if isinstance(value, str) else []
    if parts and not value.startswith("/"):
        try:
            return Path(*(plain_name(part, where, what) for part in parts))
        except DataError:
            pass
    raise where.error(f"{what} must be a relative path inside the image folder (no '..', not absolute), "
                      f"got {brief(value)}")


def number(value: Any, where: Where, what: str) -> float:
    """A finite JSON number (JSON parsers accept NaN and Infinity; boxes must not)."""
    try:
        if not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    except OverflowError:  # an integer too large for a float
        pass
    raise where.error(f"{what} must be a finite number, got {brief(value)}")


def true_false(value: Any, where: Where) -> str:
    """A true/false label as "true" or "false": NLVR writes "true", NLVR2 "True", some copies a bool."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower()
    raise where.error(f"label must be true or false, got {brief(value)}")


def is_file(path: Path) -> bool:
    """Path.is_file that also says False for names the OS rejects (too long, NUL bytes)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def image_file(path: Path, where: Where, check: bool, what: str = "image") -> Path:
    """`path`, after checking the file exists when `check` is set."""
    if check and not is_file(path):
        raise where.error(f"{what} not found: {path}")
    return path


def image_folder(path: Path, check: bool) -> Path:
    """A folder of images; a missing one is fatal (every sample would fail), not a bad sample."""
    if check and not path.is_dir():
        raise DataError("image directory not found", path=path)
    return path


def extra_fields(entry: dict, used: set[str] | frozenset[str]) -> dict:
    """The entry's other fields, kept under their own names for later use (programs, scenes, ...)."""
    return {key: value for key, value in entry.items() if key not in used}


def add_unique(make_sample, where: Where, id_field: str, seen: set, samples: list, skipped) -> None:
    """Append `make_sample(where)` to `samples`; a bad sample, or one whose question_id is in `seen`
    (named by `id_field` in the message), is counted in `skipped` instead."""
    try:
        sample = make_sample(where)
        if sample.question_id in seen:
            raise where.at(id_field).error(f"duplicate {id_field} {sample.question_id!r}")
        seen.add(sample.question_id)
        samples.append(sample)
    except DataError as error:
        skipped.add(error)


def read_unique_lines(path: Path, skipped, make_sample, id_field: str) -> list:
    """`make_sample(row, where)` for every JSON line of `path`; a bad row or a repeated
    question_id (named by `id_field` in the message) is a bad sample, counted in `skipped`."""
    from vlfuse.data.formats.common import iter_jsonl

    samples, seen = [], set()
    for line, row in iter_jsonl(path, skipped):
        add_unique(lambda where: make_sample(row, where), Where(path, line), id_field, seen, samples, skipped)
    return samples
