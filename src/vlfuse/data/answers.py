"""The answer vocabulary: answers as classes, the most frequent training answers first."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable


def normalize_answer(answer: str) -> str:
    return " ".join(answer.strip().lower().split())


class AnswerVocab:
    def __init__(self, answers: list[str]):
        if not answers:
            raise ValueError("the answer list is empty: the training data has no answers")
        self.answers = list(answers)
        self._index = {a: i for i, a in enumerate(self.answers)}

    @classmethod
    def build(cls, answers: Iterable[str], max_answers: int) -> "AnswerVocab":
        counts = Counter(normalize_answer(a) for a in answers)
        # Sort by count, then alphabetically, so the class order never depends on file order.
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls([a for a, _ in ranked[:max_answers]])

    def index(self, answer: str | None) -> int | None:
        return None if answer is None else self._index.get(normalize_answer(answer))

    def soft_targets(self, answers: Iterable[str], answer: str | None = None) -> list[tuple[int, float]]:
        """VQA v2 soft scores: (class, min(1, #humans who gave it / 3)) for the human `answers` that are
        classes (10 in VQA v2: 3 or more agreeing annotators make a full 1.0); with fewer than two human
        answers, the single `answer` (or the one given) scores 1.0. Empty when no answer is a class."""
        answers = list(answers)
        if len(answers) < 2:
            label = self.index(answer if answer is not None else (answers[0] if answers else None))
            return [] if label is None else [(label, 1.0)]
        counts = Counter(i for i in map(self.index, answers) if i is not None)
        return sorted((i, min(1.0, n / 3)) for i, n in counts.items())

    def __len__(self) -> int:
        return len(self.answers)

    def __getitem__(self, i: int) -> str:
        return self.answers[i]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.answers, ensure_ascii=False, indent=0), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "AnswerVocab":
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))
