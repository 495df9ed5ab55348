"""Machinery shared by the dataset readers: strict JSON/JSONL reading, bad-sample policy, checks.

Every problem with input data becomes a DataError that names the file and, where it can, the
line, column or field, so a user can go straight to the broken spot.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlfuse.data.records import CaptionSample, RegionAnnotation, VQASample
from vlfuse.errors import ConfigError, DataError

ON_BAD_SAMPLE = ("error", "skip")
MAX_QUESTION_CHARS = 1000


class SkipLog:
    """Applies the `on_bad_sample` policy: raise the first bad sample, or record it and go on."""

    def __init__(self, on_bad_sample: str = "error"):
        if on_bad_sample not in ON_BAD_SAMPLE:
            raise ConfigError(f"on_bad_sample must be one of {', '.join(map(repr, ON_BAD_SAMPLE))}; "
                              f"got {on_bad_sample!r}")
        self.on_bad_sample = on_bad_sample
        self.skipped: list[DataError] = []
        # Samples lost, each counted once: one error may cost several (a corrupt image's questions),
        # or none (an annotation of no question).
        self.count = 0

    def add(self, error: DataError, samples: int = 1) -> None:
        """Report a problem that costs `samples` samples: raised under "error", recorded under "skip"."""
        if self.on_bad_sample == "error":
            raise error
        self.skipped.append(error)
        self.count += samples

    def summary(self, max_reasons: int = 5) -> str:
        """One human-readable paragraph: the count and the first few reasons."""
        if not self.skipped:
            return "no bad samples skipped"
        noun = "sample" if self.count == 1 else "samples"
        problems = len(self.skipped)
        found = f" ({problems} problem{'s' if problems > 1 else ''} found)" if problems != self.count else ""
        lines = [f"skipped {self.count} bad {noun}{found}:"]
        lines += [f"  - {error}" for error in self.skipped[:max_reasons]]
        if len(self.skipped) > max_reasons:
            lines.append(f"  ... and {len(self.skipped) - max_reasons} more")
        return "\n".join(lines)

    def as_dict(self, max_reasons: int = 5) -> dict[str, Any]:
        """JSON-ready record for a run's metadata: the count and the first few reasons."""
        return {"count": self.count, "reasons": [str(error) for error in self.skipped[:max_reasons]]}


@dataclass
class ReadResult:
    """What every reader returns: the good samples, and the log of the bad ones it skipped.

    Question-style readers return VQASamples, caption readers CaptionSamples, COCO instances
    RegionAnnotations; one result never mixes kinds.
    """

    samples: list[VQASample] | list[CaptionSample] | list[RegionAnnotation]
    skipped: SkipLog = field(default_factory=SkipLog)


def read_text(path: str | Path) -> str:
    """The whole file as UTF-8 text (a leading BOM is dropped); DataError if missing or not UTF-8."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path=path) from None
    except IsADirectoryError:
        raise DataError("expected a file, found a directory", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror or exc}", path=path) from None
    return _decode_utf8(data, path, line=None, offset=0).removeprefix("\ufeff")


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; DataError naming line and column if it is malformed."""
    path = Path(path)
    return _parse_json(read_text(path), path, line=None)


def iter_jsonl(path: str | Path, skipped: SkipLog | None = None) -> Iterator[tuple[int, Any]]:
    """Yield (line_number, object) for each non-blank line of a JSON Lines file.

    A malformed or non-UTF-8 line raises DataError naming the line; when `skipped` is given it
    is reported there instead, so a "skip" policy drops just that line.
    """
    path = Path(path)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise DataError("file not found", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror or exc}", path=path) from None
    with f:
        offset = 0
        for line_number, raw in enumerate(f, start=1):
            try:
                text = _decode_utf8(raw, path, line=line_number, offset=offset)
                if line_number == 1:
                    text = text.removeprefix("\ufeff")
                if text.strip():
                    # Without the newline, an unfinished line errors at its own end, not the next line.
                    yield line_number, _parse_json(text.rstrip("\r\n"), path, line=line_number)
            except DataError as error:
                if skipped is None:
                    raise
                skipped.add(error)
            offset += len(raw)


def check_question(question: Any, *, max_chars: int = MAX_QUESTION_CHARS, path: str | Path | None = None,
                   line: int | None = None, field: str | None = "question") -> str:
    """The question with surrounding whitespace stripped; DataError if not a usable question."""
    if not isinstance(question, str):
        raise DataError(f"question must be a string, got {type(question).__name__}",
                        path=path, line=line, field=field)
    check_encodable(question, path=path, line=line, field=field)
    question = question.strip()
    if not question:
        raise DataError("empty question", path=path, line=line, field=field)
    if len(question) > max_chars:
        raise DataError(f"question too long: {len(question)} characters (max {max_chars})",
                        path=path, line=line, field=field)
    return question


def check_choices(choices: Any, answer: str | None = None, **where) -> tuple[str, ...]:
    """Multiple-choice candidates (stripped): distinct non-empty strings, `answer` (when given) among
    them; DataError at `where` (path, line, field) otherwise."""
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c.strip() for c in choices):
        raise DataError("choices must be a non-empty list of non-empty strings", **where)
    for choice in choices:
        check_encodable(choice, **where)
    choices = tuple(c.strip() for c in choices)
    if len(set(choices)) != len(choices):
        raise DataError("the choices list an answer twice", **where)
    if answer is not None and answer.strip() not in choices:
        raise DataError(f"the answer {answer!r} is not among the choices", **where)
    return choices


def check_encodable(text: str, **where) -> None:
    """DataError at the first character UTF-8 cannot hold: a byte Python kept undecoded from a
    command line (surrogateescape) or a lone surrogate from a JSON escape; tokenizers refuse both."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        what = (f"byte 0x{code - 0xDC00:02x} that is not UTF-8" if 0xDC80 <= code <= 0xDCFF
                else f"lone surrogate U+{code:04X}")
        raise DataError(f"not valid text: a {what} at character {exc.start + 1}", **where) from None


def _decode_utf8(data: bytes, path: Path, *, line: int | None, offset: int) -> str:
    """Decode UTF-8, naming the first bad byte and its offset in the file."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = offset + exc.start
        if line is None:  # whole-file read: work the line out, it is what editors show
            line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"not valid UTF-8: byte 0x{data[exc.start]:02x} at byte offset {where}",
                        path=path, line=line) from None


def _parse_json(text: str, path: Path, *, line: int | None) -> Any:
    """json.loads with errors located; `line` is the line `text` starts on (JSONL), if any."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at_line = exc.lineno if line is None else line + exc.lineno - 1
        raise DataError(f"malformed JSON at line {at_line}, column {exc.colno}: {exc.msg}",
                        path=path, line=at_line) from None
    except RecursionError:
        raise DataError("malformed JSON: nested too deeply", path=path, line=line) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits, which Python refuses to parse
        raise DataError(f"malformed JSON: {exc}", path=path, line=line) from None
