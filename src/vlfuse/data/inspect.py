"""`vlfuse data inspect`: what a configured split holds, before spending time training on it.

Counts, the most common answers, question lengths, question types and every problem found. The
split is read with on_bad_sample="skip" whatever the config says, so that all problems are listed
rather than the first one raised; a broken file structure still raises. Readers only check that
image files exist; `decode=True` also decodes every image, as training will, and lists the bad ones.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from pathlib import Path

from ..config import DataConfig
from .answers import normalize_answer
from .formats.common import ReadResult
from .loading import CAPTION_FORMATS, DIALOG_FORMATS, read_split

MAX_LISTED = 20  # bad images named in the text report (the JSON lists all)


def inspect_split(data: DataConfig, split: str = "train", top: int = 10, decode: bool = False,
                  progress: bool = False) -> dict:
    """The JSON-ready summary of one split of a data config; `decode`: decode every image too."""
    result = read_split(dataclasses.replace(data, on_bad_sample="skip"), split)
    # webdataset shards hold either kind: their samples say which.
    captions = data.format in CAPTION_FORMATS or any(hasattr(s, "captions") for s in result.samples[:1])
    if data.format in DIALOG_FORMATS:
        from .dialog_dataset import summarize_dialogs

        summary = summarize_dialogs(result, top)
    else:
        summary = summarize_captions(result) if captions else summarize(result, top)
    if decode:
        summary["decoded"] = decode_images(image_paths(result.samples), progress)
    return {"format": data.format, "split": split, **summary}


def image_paths(samples: list) -> list:
    """Every image file the samples use, each once, in order (NLVR2's second image too: a reader's
    Paths in extra["images"], never a table's own column of that name)."""
    paths: dict = {}  # insertion-ordered set
    for sample in samples:
        paths[sample.image_path] = None
        more = sample.extra.get("images")
        paths.update((p, None) for p in (more if isinstance(more, tuple) else ()) if isinstance(p, Path))
    return list(paths)


def decode_images(paths: list, progress: bool = False) -> dict:
    """Decode each image as training does (images.load_image); the bad ones with their reasons."""
    from ..errors import DataError
    from ..progress import track
    from .images import load_image

    bad = []
    for path in track(paths, "Decoding images", total=len(paths), enabled=progress):
        try:
            load_image(path)
        except DataError as error:
            bad.append({"path": str(path), "reason": error.reason})
    return {"images": len(paths), "bad": bad}


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
    words = [len(s.question.split()) for s in samples]
    return {
        "samples": len(samples),
        "distinct_questions": len({s.question for s in samples}),  # NLVR asks each statement of six images
        "images": len(image_paths(samples)),  # NLVR2's second images too
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
    if skipped["reasons"]:  # a problem may cost no sample (an annotation of no question)
        lines.append(f"problems: {skipped['count']} bad samples skipped; first reasons:")
        lines += [f"  - {reason}" for reason in skipped["reasons"]]
    else:
        lines.append("problems: none")
    return lines + _decoded(report.get("decoded"))


def _decoded(decoded: dict | None) -> list[str]:
    if decoded is None:
        return []
    bad = decoded["bad"]
    if not bad:
        return [f"images: all {decoded['images']} decode"]
    lines = [f"images: {len(bad)} of {decoded['images']} do not decode:"]
    lines += [f"  - {b['path']}: {b['reason']}" for b in bad[:MAX_LISTED]]
    if len(bad) > MAX_LISTED:
        lines.append(f"  ... and {len(bad) - MAX_LISTED} more (--json lists them all)")
    return lines
