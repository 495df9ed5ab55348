"""Task pretrain's LightningModule (every enabled objective on each batch) and `prepare_pretrain`."""

from __future__ import annotations

from pathlib import Path

import torch

from ...config import Config
from ...data.caption_dataset import CaptionDataset, PairSampler, collate_pairs
from ...data.loading import read_split
from ...errors import ConfigError
from ...losses.adversarial import dann_lambda
from ...models.pretrain import build_pretrain_model, objective_weights
from ...models.saved import save_vocabularies
from ...train.run import EpochDataModule, Prepared, steps_per_epoch, warn_skipped
from ..base import TaskModule, run_summary, split_summary
from .data import pretrain_tokenizer
from .model import save_pretrained_dir


class PretrainModule(TaskModule):
    """Every objective of the PretrainModel on each batch; the DANN schedule grows the reversed gradient."""

    shown = ("loss", "itc_acc", "itm_acc", "mlm_acc")

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.model.losses(batch, self.generator())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if "adversarial" in self.model.heads:  # DANN schedule: the reversed gradient grows with progress
            self.model.heads["adversarial"].reverse.lambd = dann_lambda(self.global_step / self.total_steps)
        return super().training_step(batch, batch_idx)


def pairs_split(dataset: CaptionDataset, read) -> dict:
    return split_summary(read, images=len(dataset), captions=len(dataset.captions))


def _check(config: Config) -> None:
    if config.model.fusion is None:
        raise ConfigError("config key 'model.fusion' is required for task pretrain: the fusion is what ITM, MLM "
                          "and MRM train")
    weights = objective_weights(config.pretrain)
    if (weights["itc"] or weights["itm"]) and config.train.batch_images < 2:
        raise ConfigError("config key 'train.batch_images' must be >= 2 for task pretrain with itc or itm: the "
                          "other images of a batch are each pair's negatives")


def prepare_pretrain(config: Config, model_dir: Path, resume: bool, progress: bool) -> Prepared:
    """Task pretrain: captioned images, one caption per image in each batch, every objective on each batch."""
    _check(config)
    train_read = read_split(config.data, "train")
    val_read = read_split(config.data, "val") if config.data.val else None
    captions = [c for s in train_read.samples for c in s.captions]
    tokenizer = pretrain_tokenizer(config, captions, model_dir, resume)
    save_vocabularies(model_dir, config, tokenizer, None)
    args = (tokenizer, config.data.image_size, config.data.max_question_length)
    train_set = CaptionDataset(train_read.samples, *args, train_read.skipped, progress, "Loading train images")
    if len(train_set) < 2:
        raise ConfigError(f"task pretrain needs at least 2 captioned training images, found {len(train_set)}"
                          + (f"; {train_read.skipped.summary()}" if train_read.skipped.count else ""))
    val_set = CaptionDataset(val_read.samples, *args, val_read.skipped, progress, "Loading val images") \
        if val_read else None
    warn_skipped(train=train_read, val=val_read)

    model = build_pretrain_model(config, tokenizer)
    module = PretrainModule(model, config.train, steps_per_epoch(config, len(train_set)) * config.train.epochs,
                            config.seed)
    summary = run_summary("pretrain", model, tokenizer, pairs_split(train_set, train_read),
                          None if val_set is None else pairs_split(val_set, val_read), objectives=model.weights)
    summary["parameters"] = {"backbone": sum(p.numel() for p in model.backbone().parameters()),
                             "heads": sum(p.numel() for p in model.heads.parameters())}
    datamodule = EpochDataModule(train_set, val_set, config, collate_pairs, PairSampler)
    return Prepared(module, datamodule, lambda: save_pretrained_dir(model_dir, model.cpu(), config, tokenizer), summary)
