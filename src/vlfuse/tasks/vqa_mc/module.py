"""Training of task vqa_mc: the LightningModule (a dict of losses per step) and `prepare`.

Losses: `choice`, the cross-entropy of the true candidate over each question's candidates (the
scores are the match head's log-odds, so the candidates compete as they do at test time), and
`match`, the match head's own binary cross-entropy on every (question, candidate) row, weighted
by vqa_mc.match_weight, which keeps the log-odds a calibrated "does this answer fit?" signal.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from ...config import Config, TrainConfig
from ...data.loading import read_split
from ...data.subsample import sample_images
from ...data.vqa_dataset import IGNORE_INDEX
from ...errors import ConfigError
from ...models.factory import build_mc_model, text_tokenizer_file
from ...models.multiple_choice import MultipleChoiceModel
from ...models.saved import TOKENIZER, save_model_dir, save_vocabularies
from ...train.run import EpochDataModule, Prepared, steps_per_epoch, warn_skipped
from ..base import TaskModule, run_summary, split_summary
from .data import PAD_CHOICE, MCDataset, collate_mc, mc_tokenizer, with_choices

MODEL_INPUTS = ("images", "input_ids", "attention_mask", "image_index", "choice_index")


def match_targets(choice_index: torch.Tensor, labels: torch.Tensor, rows: int) -> torch.Tensor:
    """Per row: 1 for a question's true candidate, 0 for its others, IGNORE_INDEX for rows of unlabelled questions."""
    targets = torch.full((rows,), IGNORE_INDEX, dtype=torch.long, device=choice_index.device)
    labelled = labels != IGNORE_INDEX
    index = choice_index[labelled]
    targets[index[index != PAD_CHOICE]] = 0
    targets[index.gather(1, labels[labelled, None]).squeeze(1)] = 1
    return targets


class MCModule(TaskModule):
    shown = ("loss", "acc")

    def __init__(self, model: MultipleChoiceModel, train_config: TrainConfig, total_steps: int,
                 match_weight: float = 0.5):
        super().__init__(model, train_config, total_steps)
        self.match_weight = match_weight

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """{"loss": the sum, "choice_loss", "match_loss" (with match_weight > 0), "acc"}: each logged as
        train_<key> / val_<key> (the shape of vlfuse.tasks.base.TaskModule.losses)."""
        scores, logits = self.model.choice_scores(*(batch[k] for k in MODEL_INPUTS))
        labels = batch["labels"]
        out = {"choice_loss": F.cross_entropy(scores, labels, ignore_index=IGNORE_INDEX)}
        if self.match_weight:
            targets = match_targets(batch["choice_index"], labels, len(logits))
            out["match_loss"] = self.match_weight * F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)
        return {"loss": sum(out.values()), **out,
                "acc": (scores.argmax(-1) == labels).sum() / max(self.batch_size(batch), 1)}

    def batch_size(self, batch: dict) -> int:
        """Questions with an answer: what the losses and the accuracy average over."""
        return int((batch["labels"] != IGNORE_INDEX).sum())


def read_mc_split(config: Config, split: str):
    """(ReadResult of the split's questions that have candidates, how many had none)."""
    read = read_split(config.data, split)
    if split == "train":
        read.samples = sample_images(read.samples, config.data.train_fraction, config.seed)
    read.samples, dropped = with_choices(read.samples, config.vqa_mc.num_choices)
    return read, dropped


def _split_summary(dataset: MCDataset, read, dropped: int) -> dict:
    widths = sorted({len(c) for group in dataset.choices for c in group})
    return split_summary(read, images=len(dataset), questions=dataset.num_questions, choices=widths,
                         without_choices=dropped)


def prepare_vqa_mc(config: Config, model_dir: Path, resume: bool, progress: bool) -> Prepared:
    """Task vqa_mc: questions grouped by image, every candidate of every question scored."""
    train_read, train_dropped = read_mc_split(config, "train")
    train_read.samples = [s for s in train_read.samples if s.answer is not None]
    val_read, val_dropped = read_mc_split(config, "val") if config.data.val else (None, 0)
    if val_read is not None:
        val_read.samples = [s for s in val_read.samples if s.answer is not None]
    tokenizer = mc_tokenizer(train_read.samples, text_tokenizer_file(config), model_dir / TOKENIZER if resume else None)
    save_vocabularies(model_dir, config, tokenizer, None)
    args = (tokenizer, config.data.image_size, config.data.max_question_length)
    train_set = MCDataset(train_read.samples, *args, train_read.skipped, progress, "Loading train images")
    if len(train_set) == 0:
        raise ConfigError("no usable training questions (with an answer and candidates) in data.train"
                          + (f": {train_read.skipped.summary()}" if train_read.skipped.count else ""))
    val_set = MCDataset(val_read.samples, *args, val_read.skipped, progress, "Loading val images") if val_read else None
    warn_skipped(train=train_read, val=val_read)
    model = build_mc_model(config, tokenizer.get_vocab_size())
    module = MCModule(model, config.train, steps_per_epoch(config, len(train_set)) * config.train.epochs,
                      config.vqa_mc.match_weight)
    summary = run_summary("vqa_mc", model, tokenizer, _split_summary(train_set, train_read, train_dropped),
                          None if val_set is None else _split_summary(val_set, val_read, val_dropped))
    datamodule = EpochDataModule(train_set, val_set, config, partial(collate_mc, with_samples=False))
    return Prepared(module, datamodule, lambda: save_model_dir(model_dir, model.cpu(), config, tokenizer, None),
                    summary)
