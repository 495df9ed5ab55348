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

    def __len__(self) -> int:
        return len(self.answers)

    def __getitem__(self, i: int) -> str:
        return self.answers[i]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.answers, ensure_ascii=False, indent=0), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "AnswerVocab":
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))
