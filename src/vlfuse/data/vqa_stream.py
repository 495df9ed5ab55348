"""Task vqa streamed from tar shards (`data.stream: true`): images are decoded as they go by, never held.

The questions are read first (the shards' JSON members only: text, a small fraction of the bytes)
to build the vocabularies and to know each shard's size. Training then streams the images through
DataLoader workers with `ShardStream`: whole shards per (process, worker) slot, a shuffle buffer,
and the same number of items in every slot so that DDP processes take the same number of steps.
An item is what `GroupedVQADataset` gives, (image tensor, ImageGroup), so `collate_groups`, scene
graphs and the model see no difference.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from ..errors import DataError
from .answers import AnswerVocab
from .records import VQASample
from .shard_stream import ShardStream
from .tar import ShardSample, tar_member
from .vqa_dataset import ImageGroup, encode_groups, group_by_image


def items_per_slot(shard_sizes: list[int], slots: int, batch_size: int = 1) -> int:
    """Items each slot yields per epoch: enough for the fullest slot whatever the epoch's shard order,
    rounded up to whole batches of `batch_size` (give it when a process has several workers: each
    batches its own items, and a short batch in the middle of the epoch would break resuming)."""
    if len(shard_sizes) >= slots:  # whole shards per slot: at most ceil(n / slots) of the largest ones
        most = sum(sorted(shard_sizes, reverse=True)[: math.ceil(len(shard_sizes) / slots)])
    else:  # every slot reads every shard and keeps every slots-th sample
        most = math.ceil(sum(shard_sizes) / slots)
    return math.ceil(most / batch_size) * batch_size


class StreamedVQADataset(ShardStream):
    """Items (uint8 image [3, S, S], ImageGroup) for the images of `samples` (records read from shards).

    `world_size` processes x `workers` DataLoader workers (0 counts as one) share the shards; each
    yields `batches_per_rank` batches of `batch_size` images per epoch. An image that fails to decode
    stops the run under on_bad_sample=error; under skip it is reported on stderr and left out.
    """

    def __init__(self, samples: list[VQASample], tokenizer, answers: AnswerVocab, image_size: int, max_length: int,
                 *, batch_size: int, world_size: int = 1, workers: int = 0, shuffle_buffer: int = 1000,
                 seed: int = 0, on_bad_sample: str = "skip"):
        groups = group_by_image(samples)
        sizes: dict[Path, int] = {}
        for group in groups:
            member = tar_member(group.image_path)
            if member is None:
                raise DataError("data.stream reads images from tar shards (data.format: webdataset), "
                                "but this image is a plain file", path=group.image_path)
            sizes[member[0]] = sizes.get(member[0], 0) + 1
        super().__init__(sorted(sizes), image_size=image_size, shuffle_buffer=shuffle_buffer, seed=seed,
                         batch_size=batch_size)
        self.shard_sizes = [sizes[s] for s in self.shards]
        self.groups: dict[Path, ImageGroup] = {g.image_path: g for g in groups}
        self.unanswerable = encode_groups(groups, tokenizer, answers, max_length)
        self.num_questions = sum(len(g.samples) for g in groups)
        self.num_images = len(groups)
        self.workers, self.on_bad_sample = max(workers, 1), on_bad_sample
        self.place(0, world_size)

    def place(self, rank: int, world_size: int) -> None:
        """This process's rank among `world_size`, fixed before the workers start (they may not see
        torch.distributed), and the epoch length that follows from it."""
        self.rank, self.world_size = rank, world_size
        self.slots = world_size * self.workers
        self.items_per_slot = items_per_slot(self.shard_sizes, self.slots, self.batch_size if self.workers > 1 else 1)

    @property
    def batches_per_rank(self) -> int:
        return self.workers * math.ceil(self.items_per_slot / self.batch_size)

    def __len__(self) -> int:
        """Images one process yields per epoch (a DataLoader divides it by the batch size)."""
        return self.workers * self.items_per_slot

    def _image_path(self, sample: ShardSample) -> Path:
        return sample.shard / f"{sample.key}.{sample.image_extension}"

    def wanted(self, sample: ShardSample) -> bool:
        return self._image_path(sample) in self.groups  # not left out by train_fraction or a bad record

    def _item(self, sample: ShardSample) -> tuple | None:
        from .images import image_to_tensor, load_image_bytes

        path = self._image_path(sample)
        try:
            image = image_to_tensor(load_image_bytes(sample.members[sample.image_extension], name=str(path)),
                                    self.image_size)
        except DataError as exc:
            if self.on_bad_sample == "error":
                raise
            print(f"warning: skipped while streaming: {exc}", file=sys.stderr)
            return None
        return image, self.groups[path]

    def summary(self) -> dict:
        """For run.json: what one epoch streams (padding repeats a slot's own images)."""
        return {"shards": len(self.shards), "slots": self.slots, "items_per_slot": self.items_per_slot,
                "repeated_per_epoch": self.slots * self.items_per_slot - self.num_images}


def check_stream(config) -> None:
    """data.stream needs shards (format webdataset), task vqa and no feature cache (which makes streaming moot)."""
    from ..errors import ConfigError

    data = config.data
    if data.shuffle_buffer < 0:
        raise ConfigError(f"config key 'data.shuffle_buffer' must be >= 0, got {data.shuffle_buffer}")
    if not data.stream:
        return
    if data.format != "webdataset":
        raise ConfigError(f"config key 'data.stream' streams tar shards, but data.format is {data.format}: "
                          "write shards with `vlfuse data shard CONFIG --split train --out DIR` and set "
                          "data.format: webdataset")
    if config.task != "vqa":
        raise ConfigError(f"config key 'data.stream' serves task vqa; task {config.task} loads its data whole")
    if data.feature_cache:
        raise ConfigError("config keys 'data.stream' and 'data.feature_cache' exclude each other: cached features "
                          "are small enough to load whole; set one of them")
