"""`vlfuse data inspect`: what a configured split holds, before spending time training on it.

Counts, the most common answers, question lengths, question types and every problem found. The
split is read with on_bad_sample="skip" whatever the config says, so that all problems are listed
rather than the first one raised; a broken file structure still raises.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter

from ..config import DataConfig
from .answers import normalize_answer
from .formats.common import ReadResult
from .loading import read_split


def inspect_split(data: DataConfig, split: str = "train", top: int = 10) -> dict:
    """The JSON-ready summary of one split of a data config."""
    result = read_split(dataclasses.replace(data, on_bad_sample="skip"), split)
    return {"format": data.format, "split": split, **summarize(result, top)}


def summarize(result: ReadResult, top: int = 10) -> dict:
    """Counts and distributions of a question-style ReadResult (VQASamples)."""
    samples = result.samples
    answers = Counter(normalize_answer(s.answer) for s in samples if s.answer is not None)
    # NLVR2 keeps its second image in extra["images"]: count every image file a sample uses.
    images = {p for s in samples for p in (s.image_path, *s.extra.get("images", ()))}
    words = [len(s.question.split()) for s in samples]
    return {
        "samples": len(samples),
        "distinct_questions": len({s.question for s in samples}),  # NLVR asks each statement of six images
        "images": len(images),
        "answered": sum(answers.values()),
        "distinct_answers": len(answers),
        "top_answers": [{"answer": a, "count": n}
                        for a, n in sorted(answers.items(), key=lambda kv: (-kv[1], kv[0]))[:top]],
        "question_words": {"min": min(words), "median": statistics.median(words), "max": max(words)} if words else None,
        "question_types": dict(Counter(s.question_type for s in samples).most_common()),
        "skipped": result.skipped.as_dict(),
    }


def format_report(report: dict) -> str:
    """The summary as text for a terminal."""
    lines = [f"{report['format']} / {report['split']}: {report['samples']} samples "
             f"({report['distinct_questions']} distinct questions), {report['images']} images, "
             f"{report['answered']} answered, {report['distinct_answers']} distinct answers"]
    if report["top_answers"]:
        lines.append("top answers: " + ", ".join(f"{a['answer']} ({a['count']})" for a in report["top_answers"]))
    if report["question_words"]:
        w = report["question_words"]
        lines.append(f"question words: min {w['min']}, median {w['median']:g}, max {w['max']}")
    if report["question_types"]:
        lines.append("question types: " + ", ".join(f"{t} ({n})" for t, n in report["question_types"].items()))
    skipped = report["skipped"]
    if skipped["count"]:
        lines.append(f"problems: {skipped['count']} bad samples skipped; first reasons:")
        lines += [f"  - {reason}" for reason in skipped["reasons"]]
    else:
        lines.append("problems: none")
    return "\n".join(lines)
