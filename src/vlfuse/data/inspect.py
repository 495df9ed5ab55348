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
from .loading import CAPTION_FORMATS, DIALOG_FORMATS, read_split


def inspect_split(data: DataConfig, split: str = "train", top: int = 10) -> dict:
    """The JSON-ready summary of one split of a data config."""
    result = read_split(dataclasses.replace(data, on_bad_sample="skip"), split)
    # webdataset shards hold either kind: their samples say which.
    captions = data.format in CAPTION_FORMATS or any(hasattr(s, "captions") for s in result.samples[:1])
    if data.format in DIALOG_FORMATS:
        from .dialog_dataset import summarize_dialogs

        summary = summarize_dialogs(result, top)
    else:
        summary = summarize_captions(result) if captions else summarize(result, top)
    return {"format": data.format, "split": split, **summary}


def summarize_captions(result: ReadResult) -> dict:
    """Counts of a caption-style ReadResult (CaptionSamples): images, captions per image, caption words."""
    samples = result.samples
    per_image = [len(s.captions) for s in samples]
    words = [len(c.split()) for s in samples for c in s.captions]

    def spread(values: list[int]) -> dict | None:
        return {"min": min(values), "median": statistics.median(values), "max": max(values)} if values else None

    return {"images": len(samples), "captions": sum(per_image), "uncaptioned": per_image.count(0),
            "captions_per_image": spread(per_image), "caption_words": spread(words),
            "skipped": result.skipped.as_dict()}


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
    if "captions" in report:
        return _format_captions(report)
    if "dialogs" in report:
        from .dialog_dataset import format_dialog_report

        return format_dialog_report(report) + "\n" + "\n".join(_problems(report))
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
    return "\n".join(lines + _problems(report))


def _format_captions(report: dict) -> str:
    lines = [f"{report['format']} / {report['split']}: {report['images']} images, {report['captions']} captions, "
             f"{report['uncaptioned']} without a caption"]
    for key, name in (("captions_per_image", "captions per image"), ("caption_words", "caption words")):
        if report[key]:
            low, mid, high = (report[key][k] for k in ("min", "median", "max"))
            lines.append(f"{name}: min {low}, median {mid:g}, max {high}")
    return "\n".join(lines + _problems(report))


def _problems(report: dict) -> list[str]:
    lines = []
    skipped = report["skipped"]
    if skipped["count"]:
        lines.append(f"problems: {skipped['count']} bad samples skipped; first reasons:")
        lines += [f"  - {reason}" for reason in skipped["reasons"]]
    else:
        lines.append("problems: none")
    return lines
