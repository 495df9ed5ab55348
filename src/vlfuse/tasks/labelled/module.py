"""Tasks matching and classification: the LightningModule and `prepare_labelled`."""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import torch

from ...config import Config, TrainConfig
from ...data.answers import AnswerVocab
from ...data.feature_cache import feature_collate, feature_loader
from ...data.vqa_dataset import GroupedVQADataset, collate_groups
from ...errors import ConfigError
from ...models.factory import build_model
from ...models.saved import ANSWERS, save_model_dir, save_vocabularies
from ...train.run import EpochDataModule, Prepared, steps_per_epoch, warn_skipped
from ..base import run_summary, run_tokenizer, split_summary
from ..vqa.module import VQAModule
from .data import build_labels, cache_frozen_images, check_known_labels, read_labelled, split_source


class LabelledModule(VQAModule):
    """VQAModule (cross-entropy over the classes) that can read frozen image features from the batch."""

    def __init__(self, model, train_config: TrainConfig, total_steps: int, cached_images: bool = False):
        super().__init__(model, train_config, total_steps)
        self.cached_images = cached_images

    def logits(self, batch: dict) -> torch.Tensor:
        if not self.cached_images:  # images, or data.feature_cache's features (batch["image_features"])
            return super().logits(batch)
        image = self.model.image_encoder.from_frozen(batch["images"].float())
        logits, _ = self.model.from_image_features(image, batch["input_ids"], batch["attention_mask"],
                                                   batch["image_index"])
        return logits


def labelled_split(dataset: GroupedVQADataset, read) -> dict:
    return split_summary(read, images=len(dataset), examples=dataset.num_questions,
                         labels=dict(Counter(s.answer for g in dataset.groups for s in g.samples).most_common()))


def prepare_labelled(config: Config, model_dir: Path, resume: bool, progress: bool) -> Prepared:
    """Tasks matching and classification: examples grouped by image, labels as classes."""
    train_read = read_labelled(config, "train")
    val_read = read_labelled(config, "val") if config.data.val else None
    source = split_source(config, "train")
    labels = AnswerVocab.load(model_dir / ANSWERS) if resume else build_labels(config, train_read.samples, source)
    check_known_labels(train_read.samples, labels, source)
    if val_read is not None:
        check_known_labels(val_read.samples, labels, split_source(config, "val"))
    tokenizer = run_tokenizer(config, model_dir, resume, lambda: (s.question for s in train_read.samples))
    save_vocabularies(model_dir, config, tokenizer, labels)
    model = build_model(config, tokenizer.get_vocab_size(), len(labels))
    # data.feature_cache: the items carry the frozen image encoder's features, read from disk
    loader = feature_loader(config, model.image_encoder, train_read.samples + (val_read.samples if val_read else []),
                            progress)
    args = (tokenizer, labels, config.data.image_size, config.data.max_question_length)
    train_set = GroupedVQADataset(train_read.samples, *args, train_read.skipped, progress, "Loading train images",
                                  image_loader=loader)
    if len(train_set) == 0:
        raise ConfigError("no usable training samples" + (f": {train_read.skipped.summary()}"
                                                          if train_read.skipped.count else f" in {source}"))
    val_set = (GroupedVQADataset(val_read.samples, *args, val_read.skipped, progress, "Loading val images",
                                 image_loader=loader) if val_read else None)
    warn_skipped(train=train_read, val=val_read)

    cached = loader is None and cache_frozen_images(model.image_encoder, train_set, progress)
    if cached and val_set is not None:
        cached = cache_frozen_images(model.image_encoder, val_set, progress)
        if not cached:
            raise ConfigError("the validation images' frozen features do not fit in memory beside the training "
                              "ones: set data.val=null")
    module = LabelledModule(model, config.train, steps_per_epoch(config, len(train_set)) * config.train.epochs,
                            cached)
    summary = run_summary(config.task, model, tokenizer, labelled_split(train_set, train_read),
                          None if val_set is None else labelled_split(val_set, val_read), classes=labels.answers,
                          frozen_image_features_cached="data.feature_cache" if loader is not None else cached)
    collate = feature_collate(config, partial(collate_groups, with_samples=False))
    return Prepared(module, EpochDataModule(train_set, val_set, config, collate),
                    lambda: save_model_dir(model_dir, model.cpu(), config, tokenizer, labels), summary)
