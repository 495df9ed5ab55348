"""Task multitask's LightningModule (each step one member's losses, logged with its name) and
`prepare_multitask`: every member prepared by its own task, tied to one pair of encoders."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ...config import Config, TrainConfig
from ...train.run import EpochDataModule, Prepared, world_size
from ..base import Task, TaskModule, shared_tokenizer
from .data import MultitaskDataModule
from .members import load_members, save_config, shared_vocabulary, tie_encoders
from .schedule import Schedule


class MultitaskModule(TaskModule):
    """The members' LightningModules under one optimiser: a training step runs the member whose batch it
    is; validation runs each member on its own val loader. Keys: train_<task>_<key>, val_<task>_<key>."""

    def __init__(self, members: dict[str, TaskModule], val_names: list[str], train_config: TrainConfig,
                 total_steps: int, seed: int = 0):
        super().__init__(nn.ModuleDict(members), train_config, total_steps, seed)
        self.val_names = val_names
        self.shown = ("loss",) + tuple(f"{name}_loss" for name in members)

    def member_losses(self, name: str, batch: dict, draw_step: int) -> tuple[dict[str, torch.Tensor], int]:
        member = self.model[name]
        member.draw_step = draw_step  # its random draws (retrieval's negatives): from (seed, step)
        return {f"{name}_{key}": value for key, value in member.losses(batch).items()}, member.batch_size(batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        name = batch["task"]
        out, n = self.member_losses(name, batch["batch"], self.global_step)
        self.log_losses("train", {"loss": out[f"{name}_loss"], **out}, n)
        return out[f"{name}_loss"]

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        out, n = self.member_losses(self.val_names[dataloader_idx], batch, batch_idx)
        for key, value in out.items():  # each member's loader logs its own keys: no "/dataloader_idx_N"
            self.log(f"val_{key}", value, prog_bar=key in self.shown, batch_size=n, sync_dist=True,
                     add_dataloader_idx=False)


def prepare_multitask(config: Config, model_dir: Path, resume: bool, progress: bool, *,
                      members: Mapping[str, Task]) -> Prepared:
    """Task multitask: each member's own `prepare` (from `members`, the single tasks by name) into
    model_dir/<task>, then one pair of encoders."""

    configs = load_members(config)
    vocabulary = None if resume else shared_vocabulary(configs)  # resumed: each member reloads its own (the same)
    with shared_tokenizer(vocabulary):
        prepared = {name: members[name].prepare(member, model_dir / name, resume, progress)
                    for name, member in configs.items()}
    shared = tie_encoders({name: p.module.model for name, p in prepared.items()})

    datamodules = {name: p.datamodule for name, p in prepared.items()}
    sizes = [len(dm.train_set) for dm in datamodules.values()]
    schedule = Schedule(sizes, config.multitask.schedule, config.multitask.temperature, config.seed)
    steps = sum(member_steps(config, dm) for dm in datamodules.values())
    datamodule = MultitaskDataModule(datamodules, schedule, steps, config)
    module = MultitaskModule({name: p.module for name, p in prepared.items()}, datamodule.val_names, config.train,
                             steps * config.train.epochs, config.seed)
    summary = multitask_summary(config, prepared, schedule, steps, shared, module)

    def save() -> None:  # each member's own model directory, then the multitask config beside them
        for p in prepared.values():
            p.save()
        save_config(config, model_dir)

    return Prepared(module, datamodule, save, summary, held_out="test")


def member_steps(config: Config, datamodule: EpochDataModule) -> int:
    """A member's batches in its own epoch, on each of the run's processes (train.devices of the multitask
    config), at its own batch size."""
    per_process = math.ceil(len(datamodule.train_set) / world_size(config))
    return math.ceil(per_process / datamodule.config.train.batch_images)


def multitask_summary(config: Config, prepared: dict[str, Prepared], schedule: Schedule, steps: int,
                      shared: dict[str, nn.Module], module: MultitaskModule) -> dict:
    """The task's part of run.json: the schedule, each member's own summary, and what is shared."""
    model = module.model
    return {"task": "multitask", "schedule": config.multitask.schedule,
            "shares": {name: round(s, 4) for name, s in zip(prepared, schedule.shares)},
            "steps_per_epoch": steps, "members": {name: p.summary for name, p in prepared.items()},
            "shared": {part: sum(p.numel() for p in m.parameters()) for part, m in shared.items()},
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
