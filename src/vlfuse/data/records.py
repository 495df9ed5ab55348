"""Plain records that every reader returns, whatever the on-disk format."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class VQASample:
    """One question about one image.

    `answers` keeps every human answer (10 in VQA v2, 1 in the built-in data) so that soft VQA
    accuracy can be computed; `answer` is the single training target (VQA v2's
    `multiple_choice_answer`, else the most common of `answers`).
    """

    question_id: int | str
    image_id: int | str
    image_path: Path
    question: str
    answer: str | None
    answers: tuple[str, ...] = ()
    question_type: str = "unknown"
    answer_type: str = "unknown"
    extra: dict = field(default_factory=dict, compare=False)


def majority_answer(answers: list[str] | tuple[str, ...]) -> str | None:
    """The most frequent answer; ties go to the one seen first (deterministic)."""
    if not answers:
        return None
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)


@dataclass(frozen=True)
class CaptionSample:
    """One image and every caption written for it (COCO: 5; an uncaptioned image: none).

    `split` is the split the source names (Karpathy's "train"/"restval"/..., a split list's name,
    a COCO file's "val2017"), or "" when the source names none.
    """

    image_id: int | str
    image_path: Path
    captions: tuple[str, ...]
    split: str = ""
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class RegionAnnotation:
    """The labelled objects of one image: boxes as (x0, y0, x1, y1) fractions of the image size,
    so they are ready for any resize; `categories[i]` names `boxes[i]`."""

    image_id: int | str
    image_path: Path
    width: int
    height: int
    boxes: tuple[tuple[float, float, float, float], ...]
    categories: tuple[str, ...]
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class DialogRound:
    """One round of a visual dialogue: a question, its answer and the candidate answers to rank.

    `answer` and `gt_index` are None where the data withholds them (VisDial's test split);
    otherwise `options[gt_index] == answer`.
    """

    question: str
    answer: str | None
    options: tuple[str, ...]
    gt_index: int | None
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class DialogSample:
    """One image, its caption and its dialogue; round t's history is the caption and rounds < t."""

    image_id: int | str
    image_path: Path
    caption: str
    rounds: tuple[DialogRound, ...]
    split: str = ""
    extra: dict = field(default_factory=dict, compare=False)
