"""Visual dialogues for training and evaluation: each image decoded once with all of its rounds.

Round t of a dialogue is (question t, history t, candidates, gt_index), where history t is the
caption and the rounds before t, written as text ("caption | q1 a1 | q2 a2") and cut from the
left when it is longer than the history limit: the latest rounds, which "it" and "and the blue
one?" refer to, are kept. Every distinct answer string of the split is tokenised once; a batch
encodes only the answers its rounds offer (`collate_dialogs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..progress import track
from .formats.common import SkipLog
from .images import image_to_tensor, load_image
from .records import DialogSample
from .tokenizer import encode_ids, pad_ids
from .vqa_dataset import IGNORE_INDEX

PAD_OPTION = -1  # an option index that is padding (rounds with fewer candidates than the widest)

SEPARATOR = "|"  # between history entries; in the tokenizer's vocabulary (see dialogue_texts)


def join_history(entries: list[str]) -> str:
    """History entries (the caption, then "question answer" per earlier round) as one text."""
    return f" {SEPARATOR} ".join(entries)


def history_text(caption: str, rounds: list[tuple[str, str]]) -> str:
    """The history before a round: the caption, then each earlier question and its answer."""
    return join_history([caption, *(f"{q} {a}" for q, a in rounds)])


def dialogue_texts(samples: list[DialogSample]) -> list[str]:
    """Every text a tokenizer should know: captions, questions, answers, candidates and the separator."""
    texts = [SEPARATOR]
    for s in samples:
        texts.append(s.caption)
        for r in s.rounds:
            texts.append(r.question)
            texts.extend(r.options)
    return texts


def encode_history(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids, the oldest dropped first past max_length (a leading special token such as
    [CLS] is kept); never empty."""
    out = []
    for enc in tokenizer.encode_batch(texts):
        ids, specials = enc.ids, enc.special_tokens_mask
        if len(ids) > max_length:
            head = ids[:1] if specials and specials[0] else []
            ids = head + ids[len(ids) - (max_length - len(head)):]
        out.append(ids or [0])
    return out


@dataclass
class DialogItem:
    """One dialogue's rounds, ready to batch (answers and options index the dataset's answer table)."""

    sample: DialogSample
    answer_table: list[list[int]]  # the dataset's token ids of every answer (shared, not copied)
    question_ids: list[list[int]] = field(default_factory=list)
    history_ids: list[list[int]] = field(default_factory=list)
    options: list[list[int]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


class DialogDataset(Dataset):
    """Item i = (image uint8 [3, S, S], DialogItem). A bad image is a bad sample (its dialogue is dropped)."""

    def __init__(self, samples: list[DialogSample], tokenizer, image_size: int, max_question_length: int,
                 max_history_length: int, max_answer_length: int, skip_log: SkipLog, progress: bool = True,
                 description: str = "Loading images"):
        kept, images = [], []
        for sample in track(samples, description, enabled=progress):
            try:
                images.append(image_to_tensor(load_image(sample.image_path), image_size))
            except DataError as exc:
                skip_log.add(exc, samples=len(sample.rounds))
                continue
            kept.append(sample)
        self.images = torch.stack(images) if images else torch.empty(0, 3, image_size, image_size, dtype=torch.uint8)
        self.answers: list[str] = list(dict.fromkeys(a for s in kept for r in s.rounds for a in r.options))
        index = {a: i for i, a in enumerate(self.answers)}
        self.answer_ids = encode_ids(tokenizer, self.answers, max_answer_length) if self.answers else []
        questions = [r.question for s in kept for r in s.rounds]
        histories = [history_text(s.caption, [(q.question, q.answer or "") for q in s.rounds[:t]])
                     for s in kept for t in range(len(s.rounds))]
        question_ids = iter(encode_ids(tokenizer, questions, max_question_length) if questions else [])
        history_ids = iter(encode_history(tokenizer, histories, max_history_length) if histories else [])
        self.items: list[DialogItem] = []
        for s in kept:
            item = DialogItem(s, self.answer_ids)
            for r in s.rounds:
                item.question_ids.append(next(question_ids))
                item.history_ids.append(next(history_ids))
                item.options.append([index[a] for a in r.options])
                item.labels.append(IGNORE_INDEX if r.gt_index is None else r.gt_index)
            self.items.append(item)
        self.num_rounds = len(questions)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, DialogItem]:
        return self.images[i], self.items[i]


def collate_dialogs(items: list[tuple[torch.Tensor, DialogItem]], with_samples: bool = False) -> dict:
    """A batch of dialogues, all rounds flat: image_index maps rounds to images, `options` [R, C]
    index the rows of answer_ids [U, L] (the batch's distinct answers; PAD_OPTION pads short rows)."""
    answer_ids = items[0][1].answer_table
    question_ids, history_ids, options, labels, image_index, where = [], [], [], [], [], []
    for i, (_, item) in enumerate(items):
        question_ids += item.question_ids
        history_ids += item.history_ids
        options += item.options
        labels += item.labels
        image_index += [i] * len(item.labels)
        where += [(i, t) for t in range(len(item.labels))]
    used = sorted({a for row in options for a in row})
    local = {a: k for k, a in enumerate(used)}
    width = max(len(row) for row in options)
    option_tensor = torch.full((len(options), width), PAD_OPTION, dtype=torch.long)
    for r, row in enumerate(options):
        option_tensor[r, : len(row)] = torch.tensor([local[a] for a in row], dtype=torch.long)
    q_ids, q_mask = pad_ids(question_ids)
    h_ids, h_mask = pad_ids(history_ids)
    a_ids, a_mask = pad_ids([answer_ids[a] for a in used])
    batch = {
        "images": torch.stack([image for image, _ in items]),
        "question_ids": q_ids, "question_mask": q_mask, "history_ids": h_ids, "history_mask": h_mask,
        "image_index": torch.tensor(image_index, dtype=torch.long),
        "answer_ids": a_ids, "answer_mask": a_mask, "options": option_tensor,
        "labels": torch.tensor(labels, dtype=torch.long),
    }
    if with_samples:
        batch["rounds"] = [(items[i][1].sample, t) for i, t in where]
    return batch


def summarize_dialogs(result, top: int = 10) -> dict:
    """`vlfuse data inspect` for dialogue formats: dialogues, rounds, candidates, answers, families."""
    from collections import Counter

    rounds = [r for s in result.samples for r in s.rounds]
    answers = Counter(r.answer for r in rounds if r.answer is not None)
    return {
        "dialogs": len(result.samples), "rounds": len(rounds),
        "rounds_per_dialog": sorted(Counter(len(s.rounds) for s in result.samples).items()),
        "candidates_per_round": sorted(Counter(len(r.options) for r in rounds).items()),
        "answered": sum(r.gt_index is not None for r in rounds), "distinct_answers": len(answers),
        "top_answers": [{"answer": a, "count": n} for a, n in answers.most_common(top)],
        "families": dict(Counter(r.extra.get("family", "unknown") for r in rounds).most_common()),
        "skipped": result.skipped.as_dict(),
    }


def format_dialog_report(report: dict) -> str:
    lines = [f"{report['format']} / {report['split']}: {report['dialogs']} dialogues, {report['rounds']} rounds "
             f"({report['answered']} with a ground-truth answer), {report['distinct_answers']} distinct answers",
             "rounds per dialogue: " + ", ".join(f"{k} ({n})" for k, n in report["rounds_per_dialog"]),
             "candidates per round: " + ", ".join(f"{k} ({n})" for k, n in report["candidates_per_round"])]
    if report["top_answers"]:
        lines.append("top answers: " + ", ".join(f"{a['answer']} ({a['count']})" for a in report["top_answers"]))
    lines.append("question families: " + ", ".join(f"{f} ({n})" for f, n in report["families"].items()))
    return "\n".join(lines)
