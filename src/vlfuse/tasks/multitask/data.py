"""Task multitask's data: step s trains one member's batch, the member chosen by the schedule, the batch
the next of that member's own epoch order (its sampler's order, cut into its batch size). Everything is
a function of (seed, step), so a resumed run continues exactly."""

from __future__ import annotations

import math

import lightning as L
from torch.utils.data import DataLoader, Dataset

from ...config import Config
from ...data.vqa_dataset import EpochSampler
from ...train.run import EpochDataModule
from .schedule import Schedule


class MemberBatches:
    """One member's training batches in the order its own training takes them, across epochs: batch k is
    batch k % per_epoch of its epoch k // per_epoch."""

    def __init__(self, datamodule: EpochDataModule, seed: int, rank: int, world_size: int):
        self.data, self.seed, self.rank, self.world_size = datamodule, seed, rank, world_size
        self.size = datamodule.config.train.batch_images
        self.per_epoch = math.ceil(len(self._sampler(0)) / self.size)
        self._epoch, self._order = -1, []

    def _sampler(self, epoch: int) -> EpochSampler:
        sampler = self.data.sampler(len(self.data.train_set), self.seed, True, self.rank, self.world_size)
        sampler.set_epoch(epoch)
        return sampler

    def batch(self, k: int) -> dict:
        epoch, index = divmod(k, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, list(self._sampler(epoch))
        chunk = self._order[index * self.size:(index + 1) * self.size]
        return self.data.collate([self.data.train_set[i] for i in chunk])


class StepSampler(EpochSampler):
    """The global steps of an epoch in order (every process trains the same member at a step; each
    member's own sampler splits its data across processes); `skip` resumes mid-epoch."""

    def __init__(self, size: int):
        super().__init__(size, shuffle=False)

    def __iter__(self):
        # A generator: nothing is read before the first step is asked for. A loader without batch_size
        # calls iter() on its sampler before Lightning's set_epoch, so an eager order would be last epoch's.
        epoch = self.epoch
        yield from (epoch * self.size + i for i in super().__iter__())


class StepBatches(Dataset):
    """Item `step`: {"task": the member's name, "batch": its batch}."""

    def __init__(self, names: list[str], members: list[MemberBatches], schedule: Schedule, steps: int):
        self.names, self.members, self.schedule, self.steps = names, members, schedule, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> dict:
        member, k = self.schedule.position(step)
        return {"task": self.names[member], "batch": self.members[member].batch(k)}


def as_is(item):  # the dataset's items are whole batches already
    return item


class MultitaskDataModule(L.LightningDataModule):
    """Training: StepBatches over the members' training sets; validation: one loader per member with a
    val split (`val_names` says whose, in order)."""

    def __init__(self, members: dict[str, EpochDataModule], schedule: Schedule, steps_per_epoch: int, config: Config):
        super().__init__()
        self.members, self.schedule, self.steps, self.config = members, schedule, steps_per_epoch, config
        self.val_names = [n for n, dm in members.items() if dm.val_set is not None and len(dm.val_set)]

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        batches = [MemberBatches(dm, self.config.seed, trainer.global_rank, trainer.world_size)
                   for dm in self.members.values()]
        sampler = StepSampler(self.steps)
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed  # a resumed epoch's trained steps
        if 0 < done < self.steps:
            sampler.skip = done
        workers = self.config.train.num_workers
        return DataLoader(StepBatches(list(self.members), batches, self.schedule, self.steps), batch_size=None,
                          sampler=sampler, collate_fn=as_is, num_workers=workers, persistent_workers=workers > 0)

    def val_dataloader(self) -> list[DataLoader]:
        trainer = self.trainer
        loaders = []
        for name in self.val_names:
            dm = self.members[name]
            sampler = dm.sampler(len(dm.val_set), 0, False, trainer.global_rank, trainer.world_size)
            loaders.append(DataLoader(dm.val_set, batch_size=dm.config.train.batch_images, sampler=sampler,
                                      collate_fn=dm.collate))
        return loaders
