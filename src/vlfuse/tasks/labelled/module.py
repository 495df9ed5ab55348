"""Tasks matching and classification: `prepare_labelled` (their LightningModule is VQAModule: cross-entropy
over the classes)."""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

from ...config import Config
from ...data.answers import AnswerVocab
from ...data.cached_inputs import WithTextStates, cached_inputs
from ...data.feature_cache import ImagesAreFeatures, feature_loader
from ...data.vqa_dataset import GroupedVQADataset, collate_groups
from ...errors import ConfigError
from ...models.factory import build_model
from ...models.saved import ANSWERS, save_model_dir, save_vocabularies
from ...train.run import EpochDataModule, Prepared, steps_per_epoch, warn_skipped
from ..base import run_summary, run_tokenizer, split_summary
from ..vqa.module import VQAModule
from .data import build_labels, cache_frozen_images, check_known_labels, read_labelled, split_source


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

    in_memory = loader is None and cache_frozen_images(model.image_encoder, train_set, progress)
    if in_memory and val_set is not None and not cache_frozen_images(model.image_encoder, val_set, progress):
        raise ConfigError("the validation images' frozen features do not fit in memory beside the training "
                          "ones: set data.val=null")
    collate = partial(collate_groups, with_samples=False)
    # data.feature_cache (or the features held in memory): the items carry the frozen encoders' outputs
    (train_items, val_items), collate = cached_inputs(config, model.text_encoder, [train_set, val_set],
                                                      ImagesAreFeatures(collate) if in_memory else collate, progress)
    module = VQAModule(model, config.train, steps_per_epoch(config, len(train_set)) * config.train.epochs)
    summary = run_summary(config.task, model, tokenizer, labelled_split(train_set, train_read),
                          None if val_set is None else labelled_split(val_set, val_read), classes=labels.answers,
                          frozen_image_features_cached="data.feature_cache" if loader is not None else in_memory,
                          frozen_text_states_cached=isinstance(train_items, WithTextStates))
    return Prepared(module, EpochDataModule(train_items, val_items, config, collate),
                    lambda: save_model_dir(model_dir, model.cpu(), config, tokenizer, labels), summary)
