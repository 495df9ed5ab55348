"""VQA samples grouped by image, so each image is decoded and encoded once for all its questions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler

from ..errors import DataError
from ..progress import track
from .answers import AnswerVocab
from .formats.common import SkipLog
from .images import image_to_tensor, load_image
from .records import VQASample
from .tokenizer import encode_ids, pad_ids

IGNORE_INDEX = -100  # label of a question whose answer is not a class: no loss, counted wrong in eval


@dataclass
class ImageGroup:
    image_path: Path
    samples: list[VQASample] = field(default_factory=list)
    token_ids: list[list[int]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    soft_targets: list[list[tuple[int, float]]] = field(default_factory=list)  # per question: (class, score)


def group_by_image(samples: list[VQASample]) -> list[ImageGroup]:
    groups: dict[Path, ImageGroup] = {}
    for sample in samples:
        groups.setdefault(Path(sample.image_path), ImageGroup(Path(sample.image_path))).samples.append(sample)
    return list(groups.values())


def encode_groups(groups: list[ImageGroup], tokenizer, answers: AnswerVocab, max_length: int) -> int:
    """Fill each group's token ids and answer labels; returns how many answers are not among the classes."""
    ids = iter(encode_ids(tokenizer, [s.question for g in groups for s in g.samples], max_length))
    unanswerable = 0
    for group in groups:
        for sample in group.samples:
            group.token_ids.append(next(ids))
            label = answers.index(sample.answer)
            unanswerable += label is None
            group.labels.append(IGNORE_INDEX if label is None else label)
            group.soft_targets.append(answers.soft_targets(sample.answers, sample.answer))
    return unanswerable


class GroupedVQADataset(Dataset):
    """Item i = (image tensor, ImageGroup with all of that image's questions).

    Images are decoded once at construction; a bad image is recorded in `skip_log` (or raises,
    under on_bad_sample=error) and its questions are dropped.
    """

    def __init__(self, samples: list[VQASample], tokenizer, answers: AnswerVocab, image_size: int,
                 max_length: int, skip_log: SkipLog, progress: bool = True, description: str = "Loading images",
                 image_loader=None):
        # image_loader(path) -> the item's image tensor; the feature cache passes one that returns
        # the frozen encoder's cached features instead (vlfuse.data.feature_cache).
        load = image_loader or (lambda path: image_to_tensor(load_image(path), image_size))
        self.groups: list[ImageGroup] = []
        groups = group_by_image(samples)
        images = None  # filled in place: collecting a list and stacking it would hold every image twice
        for group in track(groups, description, enabled=progress):
            try:
                image = load(group.image_path)
            except DataError as exc:
                skip_log.add(exc, samples=len(group.samples))  # all of the image's questions are lost
                continue
            if images is None:
                images = image.new_empty(len(groups), *image.shape)
            images[len(self.groups)] = image
            self.groups.append(group)
        self.images = (images[: len(self.groups)] if images is not None
                       else torch.empty(0, 3, image_size, image_size, dtype=torch.uint8))
        self.unanswerable = self.encode(tokenizer, answers, max_length)
        self.num_questions = sum(len(g.samples) for g in self.groups)

    def encode(self, tokenizer, answers: AnswerVocab, max_length: int) -> int:
        """Fill the groups' token ids and labels; how many answers are not classes. (Multiple-choice
        VQA encodes its candidates here instead.)"""
        return encode_groups(self.groups, tokenizer, answers, max_length)

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def num_images(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ImageGroup]:
        return self.images[i], self.groups[i]

    # The texts the frozen text encoder's cache serves (vlfuse.data.cached_inputs): every question,
    # image by image, and those of image i, in the order collate_groups batches them.
    @property
    def text_ids(self) -> list[list[int]]:
        return [ids for group in self.groups for ids in group.token_ids]

    @cached_property
    def first_text(self) -> list[int]:
        starts = [0]
        for group in self.groups:
            starts.append(starts[-1] + len(group.token_ids))
        return starts

    def text_rows(self, i: int) -> range:
        return range(self.first_text[i], self.first_text[i + 1])


def collate_groups(items: list[tuple[torch.Tensor, ImageGroup]], with_samples: bool = True) -> dict:
    """Batch of images with every question of each: image_index maps questions to their image.

    `samples` (the source records) are left out for training: Lightning moves batches to the
    device by walking them, and has no use for them.
    """
    token_ids, labels, image_index, samples, soft = [], [], [], [], []
    for i, (_, group) in enumerate(items):
        first = len(labels)  # the batch row of the group's first question
        soft += [(first + q, c, score) for q, targets in enumerate(group.soft_targets) for c, score in targets]
        token_ids += group.token_ids
        labels += group.labels
        image_index += [i] * len(group.samples)
        samples += group.samples
    input_ids, attention_mask = pad_ids(token_ids)
    batch = {
        "images": torch.stack([image for image, _ in items]),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "image_index": torch.tensor(image_index, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        # VQA soft scores, sparse: question row, class, score (a dense [questions, classes] would be mostly 0)
        "soft_targets": torch.tensor(soft, dtype=torch.float).reshape(-1, 3),
    }
    return {**batch, "samples": samples} if with_samples else batch


class EpochSampler(Sampler[int]):
    """A deterministic order per (seed, epoch), split across processes, that can start mid-epoch.

    Resuming after an interruption sets `skip` to the number of samples this process already
    trained on in the interrupted epoch; it applies to the next pass only.
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.shuffle, self.rank, self.world_size = size, seed, shuffle, rank, world_size
        self.epoch, self.skip = 0, 0
        self.per_rank = math.ceil(size / world_size) if size else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.size))
        # Equal share for every process (DDP hangs on unequal batch counts), even with fewer samples than ranks.
        while len(order) < self.per_rank * self.world_size:
            order += order[: self.per_rank * self.world_size - len(order)]
        mine = order[self.rank :: self.world_size]
        start, self.skip = self.skip, 0
        return iter(mine[start:])

    def __len__(self) -> int:
        return self.per_rank
