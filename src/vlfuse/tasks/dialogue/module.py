"""Task dialogue's LightningModule (discriminative: cross-entropy over the candidates; generative:
teacher-forced answers) and `prepare_dialogue`."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ...config import Config
from ...data.dialog_dataset import collate_dialogs
from ...data.loading import read_split
from ...data.vqa_dataset import IGNORE_INDEX
from ...errors import ConfigError
from ...models.factory import build_dialogue_model
from ...models.saved import save_model_dir, save_vocabularies
from ...train.run import EpochDataModule, Prepared, steps_per_epoch, warn_skipped
from ..base import TaskModule, run_summary, split_summary
from .data import MODEL_INPUTS, make_dataset, score_batch, vocabularies


class DialogueModule(TaskModule):
    """Discriminative: cross-entropy of the ground-truth candidate (and its R@1); generative: the decoder
    writes each labelled round's answer. Rounds without a ground truth are left out."""

    shown = ("loss", "r1")

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        if self.model.generative:  # teach the decoder to write each labelled round's answer
            model, rows = self.model, (labels != IGNORE_INDEX).nonzero().squeeze(1)
            context = model.context(model.encode_images(batch["images"]), *(batch[k] for k in MODEL_INPUTS[1:6]))
            answers = batch["options"][rows, labels[rows]]
            return {"loss": model.answer_loss(context, batch["answer_ids"][answers], batch["answer_mask"][answers],
                                              rows)}
        scores = score_batch(self.model, batch)
        labelled = labels != IGNORE_INDEX
        return {"loss": F.cross_entropy(scores, labels, ignore_index=IGNORE_INDEX),
                "r1": ((scores.argmax(-1) == labels) & labelled).sum() / labelled.sum().clamp_min(1)}

    def batch_size(self, batch: dict) -> int:  # the labelled rounds
        return int((batch["labels"] != IGNORE_INDEX).sum())


def dialogue_split(dataset, read) -> dict:
    return split_summary(read, dialogs=len(dataset), rounds=dataset.num_rounds, answers=len(dataset.answers))


def prepare_dialogue(config: Config, model_dir: Path, resume: bool, progress: bool) -> Prepared:
    """Task dialogue: dialogues grouped by image, every round scoring its candidates."""
    train_read = read_split(config.data, "train")
    val_read = read_split(config.data, "val") if config.data.val else None
    tokenizer, answers = vocabularies(config, train_read.samples, model_dir, resume)
    save_vocabularies(model_dir, config, tokenizer, answers)
    train_set = make_dataset(train_read.samples, tokenizer, config, train_read.skipped, progress,
                             "Loading train images")
    if len(train_set) == 0:
        raise ConfigError("no usable training dialogues: " + train_read.skipped.summary())
    val_set = (make_dataset(val_read.samples, tokenizer, config, val_read.skipped, progress, "Loading val images")
               if val_read else None)
    warn_skipped(train=train_read, val=val_read)

    model = build_dialogue_model(config, tokenizer.get_vocab_size())
    module = DialogueModule(model, config.train, steps_per_epoch(config, len(train_set)) * config.train.epochs)
    summary = run_summary("dialogue", model, tokenizer, dialogue_split(train_set, train_read),
                          None if val_set is None else dialogue_split(val_set, val_read))
    datamodule = EpochDataModule(train_set, val_set, config, collate_dialogs)
    return Prepared(module, datamodule, lambda: save_model_dir(model_dir, model.cpu(), config, tokenizer, answers),
                    summary)
