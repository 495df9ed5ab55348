"""Streaming shards (`data.stream: true`): an IterableDataset split across workers and processes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import DataError
from .images import image_to_tensor, load_image_bytes
from .tar import ShardSample, iter_shard, list_shards, read_member


def _distributed_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardStream(IterableDataset):
    """Streams the samples of tar shards, each exactly once per epoch across workers and processes.

    The (rank, worker) slots split the data: whole shards round-robin when there are at least as
    many shards as slots (each shard is read by one slot only), else samples round-robin within
    every shard (each slot reads all shards, keeps its share). Slots may end with counts that
    differ by up to a shard's worth, unless `items_per_slot` (below) evens them out.
    `shuffle_buffer > 0` shuffles the shard order per epoch and samples
    within a buffer of that many (seeded by seed, epoch and slot: reproducible); call
    `set_epoch` before each epoch (set it before the loader's workers start).

    Each item is a dict: "__key__", "__shard__", "json" (the record, {} when absent), "txt" (or
    None), and "image": uint8 [3, S, S] when `image_size` is given, else the raw bytes.

    Training needs every slot to yield the same number of items (DDP waits for every process at
    each step): `items_per_slot` makes each slot yield exactly that many, going round its own
    samples again when it has fewer (as DistributedSampler pads). `resume_batches` (with
    `batch_size`) skips what the first batches of an interrupted epoch already trained on: the
    DataLoader takes batch i from worker i % workers, so each worker skips its own share and the
    rest comes in the uninterrupted order.
    """

    def __init__(self, location: str | Path | list[Path], *, image_size: int | None = None, shuffle_buffer: int = 0,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 items_per_slot: int | None = None, batch_size: int = 1):
        super().__init__()
        self.shards = list(location) if isinstance(location, list) else list_shards(location)
        self.image_size, self.shuffle_buffer, self.seed = image_size, shuffle_buffer, seed
        self.rank, self.world_size = rank, world_size
        self.items_per_slot, self.batch_size = items_per_slot, batch_size
        self.epoch, self.resume_batches = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _worker(self) -> tuple[int, int]:
        """(worker, workers). After `resume_batches` batches the DataLoader still asks worker 0
        first, so the workers' parts rotate: worker 0 plays the one whose batch comes next."""
        worker = get_worker_info()
        wid, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        return (wid + self.resume_batches) % workers, workers

    def _slot(self) -> tuple[int, int]:
        rank, world = _distributed_rank()
        rank = rank if self.rank is None else self.rank
        world = world if self.world_size is None else self.world_size
        wid, workers = self._worker()
        return rank * workers + wid, world * workers

    def wanted(self, sample: ShardSample) -> bool:
        """Whether a sample is streamed at all (subclasses drop, say, images left out of training)."""
        return True

    def _samples(self, slot: int, slots: int) -> Iterator[ShardSample]:
        shards = list(self.shards)
        if self.shuffle_buffer:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(shards)  # the same order in every slot
        if len(shards) >= slots:
            for shard in shards[slot::slots]:
                yield from filter(self.wanted, iter_shard(shard))
            return
        index = 0
        for shard in shards:
            for sample in filter(self.wanted, iter_shard(shard, read_images=False)):
                if index % slots == slot:
                    yield ShardSample(shard, sample.key, {ext: data or read_member(shard, f"{sample.key}.{ext}")
                                                          for ext, data in sample.members.items()})
                index += 1

    def _shuffled(self, samples: Iterator[ShardSample], slot: int) -> Iterator[ShardSample]:
        if not self.shuffle_buffer:
            yield from samples
            return
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 1_000_003 + slot)
        buffer: list[ShardSample] = []
        for sample in samples:
            buffer.append(sample)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def _item(self, sample: ShardSample) -> dict:
        ext = sample.image_extension
        if ext is None:
            raise DataError(f"sample {sample.key!r} has no image member", path=sample.shard)
        image = sample.members[ext]
        if self.image_size is not None:
            image = image_to_tensor(load_image_bytes(image, name=f"{sample.shard}/{sample.key}.{ext}"),
                                    self.image_size)
        return {"__key__": sample.key, "__shard__": str(sample.shard), "json": sample.json(), "txt": sample.text(),
                "image": image}

    def _passes(self, slot: int, slots: int) -> Iterator[ShardSample]:
        """This slot's samples; with items_per_slot, exactly that many, going round again if short."""
        if self.items_per_slot is None:
            yield from self._shuffled(self._samples(slot, slots), slot)
            return
        count = 0
        while count < self.items_per_slot:
            before = count
            for sample in self._shuffled(self._samples(slot, slots), slot):
                yield sample
                count += 1
                if count == self.items_per_slot:
                    return
            if count == before:
                raise DataError(f"stream slot {slot} of {slots} has no samples: write at least as many shards "
                                "as processes x DataLoader workers", path=self.shards[0].parent)

    def _resume_skip(self) -> int:
        """Items this worker already delivered in the interrupted epoch's first `resume_batches` batches."""
        wid, workers = self._worker()
        return len(range(wid, self.resume_batches, workers)) * self.batch_size

    def __iter__(self) -> Iterator[dict]:
        slot, slots = self._slot()
        skip = self._resume_skip()
        for index, sample in enumerate(self._passes(slot, slots)):
            if index >= skip:  # skipped samples are read but never decoded
                item = self._item(sample)
                if item is not None:  # a subclass's way of leaving out a sample it cannot use
                    yield item