"""Multiple-choice VQA data: questions with candidate answers -> image groups -> batches.

A question's candidates are the data's own (`VQASample.extra["choices"]`: Visual7W, a VQA
multiple-choice questions file, a JSONL `choices` column), else they are made from the split
itself: the answer plus distractors drawn from the split's other answers, preferring those of the
same question type, then of the same answer type (so "what colour" questions get colours). The
draw and the candidates' order depend only on the question id, never on the training seed, so
every model meets the same multiple-choice set.

Each (question, candidate) pair is one text, encoded as a pair ("question [SEP] candidate"): the
fusion reads the candidate's words with the question's against the image.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from pathlib import Path

import torch

from ...data.answers import normalize_answer
from ...data.formats.common import SkipLog
from ...data.records import VQASample
from ...data.tokenizer import build_tokenizer, load_tokenizer, pad_ids
from ...data.vqa_dataset import IGNORE_INDEX, GroupedVQADataset
from ...errors import DataError

CHOICES = "choices"  # the key of VQASample.extra that holds a question's candidates
SEP = "[SEP]"  # between question and candidate, in the word-level tokenizer
PAD_CHOICE = -1  # choice_index padding: a question with fewer candidates than the batch's widest
DATA_SEED = "vqa_mc"  # distractors and candidate order: one multiple-choice set for every model


def given_choices(sample: VQASample) -> tuple[str, ...] | None:
    return sample.extra.get(CHOICES)


def with_choices(samples: list[VQASample], num_choices: int) -> tuple[list[VQASample], int]:
    """(every question that has candidates, how many were dropped for having none).

    A question without candidates in the data gets its answer and num_choices - 1 distractors (fewer
    when the split holds fewer other answers); one without an answer either is dropped.
    """
    pools = _answer_pools(samples)
    out, dropped = [], 0
    for sample in samples:
        if given_choices(sample) is not None:
            out.append(sample)
        elif sample.answer is None:
            dropped += 1
        else:
            choices = (sample.answer, *_distractors(sample, pools, num_choices - 1))
            out.append(dataclasses.replace(sample, extra={**sample.extra, CHOICES: choices}))
    return out, dropped


def _answer_pools(samples: list[VQASample]) -> dict[str, dict[str, str]]:
    """Answers (normalised -> as written, in file order) per question type, per answer type and in all."""
    pools: dict[str, dict[str, str]] = defaultdict(dict)
    for s in samples:
        if s.answer is not None:
            key = normalize_answer(s.answer)
            for pool in (f"q:{s.question_type}", f"a:{s.answer_type}", "all"):
                pools[pool].setdefault(key, s.answer)
    return pools


def _distractors(sample: VQASample, pools: dict[str, dict[str, str]], count: int) -> list[str]:
    """`count` answers other than the sample's: its question type's first, then its answer type's, then any."""
    rng = random.Random(f"{DATA_SEED}:{sample.question_id}:distractors")
    taken, picked = {normalize_answer(sample.answer)}, []
    tiers = [f"q:{sample.question_type}"] * (sample.question_type != "unknown") + \
        [f"a:{sample.answer_type}"] * (sample.answer_type != "unknown") + ["all"]
    for tier in tiers:
        options = [answer for key, answer in pools.get(tier, {}).items() if key not in taken]
        for answer in rng.sample(options, min(count - len(picked), len(options))):
            picked.append(answer)
            taken.add(normalize_answer(answer))
    return picked


def ordered_choices(sample: VQASample) -> tuple[tuple[str, ...], int | None]:
    """The candidates in a fixed shuffled order (a file may list the truth first), and the truth's index
    (None without an answer). Scores tie at first; a fixed first place would make ties look right."""
    choices = list(given_choices(sample))
    random.Random(f"{DATA_SEED}:{sample.question_id}:order").shuffle(choices)
    if sample.answer is None:
        return tuple(choices), None
    keys = [normalize_answer(c) for c in choices]
    truth = normalize_answer(sample.answer)
    if truth not in keys:
        raise DataError(f"question {sample.question_id!r}: the answer {sample.answer!r} is not among its choices",
                        field=CHOICES)
    return tuple(choices), keys.index(truth)


# --------------------------------------------------------------------------- tokens

def build_pair_tokenizer(texts: list[str]):
    """A word-level tokenizer over `texts` that encodes a (question, candidate) pair as "q [SEP] c"."""
    from tokenizers.processors import TemplateProcessing

    tokenizer = build_tokenizer(texts, specials=(SEP,))
    tokenizer.post_processor = TemplateProcessing(single="$A", pair=f"$A {SEP} $B",
                                                  special_tokens=[(SEP, tokenizer.token_to_id(SEP))])
    return tokenizer


def tokenizer_texts(samples: list[VQASample]) -> list[str]:
    return [s.question for s in samples] + [c for s in samples for c in given_choices(s)]


def mc_tokenizer(samples: list[VQASample], pretrained: Path | None, saved: Path | None):
    """The run's tokenizer: the saved one (a resumed run), a pretrained text encoder's, or a new word-level one."""
    if saved is not None:
        return load_tokenizer(saved)
    return load_tokenizer(pretrained) if pretrained else build_pair_tokenizer(tokenizer_texts(samples))


def encode_pairs(tokenizer, questions: list[str], choices: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each (question, candidate) pair, the longer side cut first to fit max_length."""
    tokenizer.enable_truncation(max_length, strategy="longest_first")
    try:
        return [encoding.ids for encoding in tokenizer.encode_batch(list(zip(questions, choices)))]
    finally:
        tokenizer.no_truncation()  # the tokenizer is shared: leave it as load_tokenizer made it


# --------------------------------------------------------------------------- dataset and batches

class MCDataset(GroupedVQADataset):
    """Questions grouped by image (each image decoded once); item i = (image, group, each question's
    candidates). Per question the group holds the token ids of every (question, candidate) pair
    and the true candidate's index (IGNORE_INDEX where the data has no answer)."""

    def __init__(self, samples: list[VQASample], tokenizer, image_size: int, max_length: int, skip_log: SkipLog,
                 progress: bool = True, description: str = "Loading images"):
        super().__init__(samples, tokenizer, None, image_size, max_length, skip_log, progress, description)

    def encode(self, tokenizer, answers, max_length: int) -> int:
        ordered = [[ordered_choices(s) for s in group.samples] for group in self.groups]
        self.choices = [[choices for choices, _ in group] for group in ordered]
        pairs = [(s.question, c) for group, questions in zip(self.groups, ordered)
                 for s, (choices, _) in zip(group.samples, questions) for c in choices]
        ids = iter(encode_pairs(tokenizer, [q for q, _ in pairs], [c for _, c in pairs], max_length))
        for group, questions in zip(self.groups, ordered):
            for choices, truth in questions:
                group.token_ids.append([next(ids) for _ in choices])
                group.labels.append(IGNORE_INDEX if truth is None else truth)
        return sum(label == IGNORE_INDEX for group in self.groups for label in group.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.groups[i], self.choices[i]


def collate_mc(items: list, with_samples: bool = True) -> dict:
    """Images, every (question, candidate) row of them, and which rows are each question's candidates.

    image_index [R]: each row's image; choice_index [Q, C]: each question's rows, PAD_CHOICE where a
    question has fewer than C candidates; labels [Q]: the true candidate's column.
    """
    rows, image_index, choice_index, labels, samples, choices = [], [], [], [], [], []
    for i, (_, group, group_choices) in enumerate(items):
        for pair_ids, label in zip(group.token_ids, group.labels):
            choice_index.append(list(range(len(rows), len(rows) + len(pair_ids))))
            rows += pair_ids
            image_index += [i] * len(pair_ids)
            labels.append(label)
        samples += group.samples
        choices += group_choices
    width = max(len(c) for c in choice_index)
    input_ids, attention_mask = pad_ids(rows)
    batch = {
        "images": torch.stack([image for image, *_ in items]),
        "input_ids": input_ids, "attention_mask": attention_mask,
        "image_index": torch.tensor(image_index, dtype=torch.long),
        "choice_index": torch.tensor([c + [PAD_CHOICE] * (width - len(c)) for c in choice_index], dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
    }
    return {**batch, "samples": samples, "choices": choices} if with_samples else batch
