"""Task captioning's LightningModule (teacher-forced cross-entropy, then optionally self-critical
training; with captioning.select_on, the best-scoring weights on val captions are kept) and
`prepare_captioning`."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ...config import CaptioningConfig, Config, TrainConfig
from ...data.caption_dataset import CaptionDataset, PairSampler
from ...data.caption_tokens import CaptionSpecials
from ...data.feature_cache import feature_collate, feature_loader
from ...data.loading import read_split
from ...errors import ConfigError
from ...metrics.captioning import caption_metrics
from ...models.captioning import CaptioningModel, generation_length
from ...models.factory import build_captioning_model
from ...models.saved import save_model_dir, save_vocabularies
from ...train.optim import configure_adamw, stage_schedule, with_schedule
from ...train.run import EpochDataModule, Prepared, steps_per_epoch, warn_skipped
from ..base import TaskModule, captioned_split, run_summary
from .data import (IGNORE_INDEX, CaptioningDataset, caption_loss, caption_tokenizer, check_captioning_config,
                   collate_captions, teacher_forcing_targets)
from .predict import decode_captions
from .scst import SelfCritical


class CaptioningModule(TaskModule):
    """Teacher-forced training; with `self_critical`, the steps from `scst_step` on train by SCST instead
    (validation keeps the cross-entropy loss). With `val_captions` (captioning.select_on), each
    validation also captions the val images and the best-scoring weights are kept, restored when
    training ends and when the SCST stage begins."""

    shown = ("loss", "token_acc", "reward")

    def __init__(self, model: CaptioningModel, task: CaptioningConfig, train_config: TrainConfig, total_steps: int,
                 val_captions: "ValCaptions | None" = None, self_critical: SelfCritical | None = None,
                 scst_step: int | None = None, seed: int = 0):
        super().__init__(model, train_config, total_steps, seed)
        self.task, self.val_captions, self.self_critical = task, val_captions, self_critical
        self.scst_step = total_steps if self_critical is None else scst_step
        self.best = {"score": -math.inf, "epoch": -1, "weights": {}, "stale": 0}

    @property
    def in_scst(self) -> bool:
        return self.global_step >= self.scst_step

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.global_step == self.scst_step and self.best["weights"]:  # SCST starts from the best weights
            self.model.load_state_dict(self.best["weights"], strict=False)
            self.best["stale"] = 0
        return super().training_step(batch, batch_idx)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        if self.training and self.in_scst:
            return self.self_critical.losses(self.model, batch, self.generator())
        inputs, targets = teacher_forcing_targets(batch["input_ids"], batch["attention_mask"])
        logits = self.model(batch.get("images"), inputs, batch["image_index"], batch.get("image_features"))
        real = targets != IGNORE_INDEX
        return {"loss": caption_loss(logits, targets, self.task.label_smoothing),
                "token_acc": (logits.argmax(-1) == targets)[real].float().mean()}

    def batch_size(self, batch: dict) -> int:  # the real target tokens
        return int(batch["attention_mask"][:, 1:].bool().sum())

    # At the start of validation, where train.ema_decay's averaged weights are already in place (Lightning
    # calls the callbacks' hooks first, and EMAWeightAveraging puts the training weights back at the end).
    def on_validation_epoch_start(self) -> None:
        if self.val_captions is None or self.trainer.sanity_checking:
            return
        metrics = self.val_captions.score(self.model, self.task)
        for name in ("bleu_4", "cider_d", self.task.select_on):
            self.log(f"val_{name}", metrics[name], prog_bar=name == self.task.select_on)
        if self._keep_if_best(metrics[self.task.select_on]):
            self.best["stale"] = 0
        else:
            self.best["stale"] += 1
            # patience never skips the SCST stage: it stops only once SCST steps have been trained
            last_stage = self.self_critical is None or self.global_step > self.scst_step
            if self.task.patience is not None and self.best["stale"] >= self.task.patience and last_stage:
                self.trainer.should_stop = True

    def _keep_if_best(self, score: float) -> bool:
        """Remember the trainable weights if `score` beats the best so far; say whether it did."""
        self.best["validated_step"] = self.global_step
        if score <= self.best["score"]:
            return False
        weights = {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        self.best.update(score=score, epoch=self.current_epoch, weights=weights)
        return True

    def on_train_end(self) -> None:
        if self.val_captions is not None and self.best.get("validated_step") != self.global_step:
            # Steps trained after the last validation (train.max_minutes stopped mid-epoch): score them too.
            self._keep_if_best(self.val_captions.score(self.model, self.task)[self.task.select_on])
        if self.best["weights"]:  # the selected weights are the ones exported
            self.model.load_state_dict(self.best["weights"], strict=False)

    def configure_optimizers(self):
        config = configure_adamw(self.model, self.cfg, self.total_steps)
        if self.self_critical is None:
            return config
        return with_schedule(config, stage_schedule(self.cfg.warmup_steps, self.scst_step, self.total_steps,
                                                    self.task.scst_lr / self.cfg.lr))

    # The best weights so far travel in the checkpoint, so a resumed run selects among every epoch.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["caption_selection"] = dict(self.best)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.best = dict(checkpoint.get("caption_selection", self.best))



class ValCaptions:
    """The val images (or their cached features) and references, captioned and scored on demand."""

    def __init__(self, dataset: CaptionDataset, tokenizer, config: Config, features: bool):
        self.images, self.tokenizer, self.features = dataset.images, tokenizer, features
        self.references = [list(s.captions) for s in dataset.samples]
        self.max_length = generation_length(config)

    def score(self, model: CaptioningModel, task: CaptioningConfig) -> dict[str, float]:
        was_training = model.training
        captions = decode_captions(model, self.tokenizer, self.images, task.beam_size, task.length_penalty,
                                   self.max_length, task.eval_batch, features=self.features)
        model.train(was_training)
        return caption_metrics([c for c, _ in captions], self.references)


def prepare_captioning(config: Config, model_dir: Path, resume: bool, progress: bool) -> Prepared:
    """Task captioning: captioned images, every caption of each image in its batch."""
    check_captioning_config(config)
    train_read = read_split(config.data, "train")
    val_read = read_split(config.data, "val") if config.data.val else None
    tokenizer = caption_tokenizer(config, train_read.samples, model_dir, resume)
    specials = CaptionSpecials.of(tokenizer)  # fail now, not after training, on a tokenizer without start / end tokens
    model = build_captioning_model(config, tokenizer.get_vocab_size())
    save_vocabularies(model_dir, config, tokenizer, None)
    # data.feature_cache: the items carry the frozen image encoder's cached features, not images.
    loader = feature_loader(config, model.image_encoder, train_read.samples + (val_read.samples if val_read else []),
                            progress)
    args = (tokenizer, config.data.image_size, config.data.max_question_length)
    train_set = CaptioningDataset(train_read.samples, *args, train_read.skipped, progress, "Loading train images",
                                  image_loader=loader)
    if config.data.hflip:
        train_set.mirror(config.data.hflip, feature_loader(config, model.image_encoder, train_set.samples,
                                                           progress, mirrored=True))
    if len(train_set) == 0:
        raise ConfigError("task captioning found no captioned training images"
                          + (f"; {train_read.skipped.summary()}" if train_read.skipped.count else ""))
    val_set = CaptioningDataset(val_read.samples, *args, val_read.skipped, progress, "Loading val images",
                                image_loader=loader) if val_read else None
    warn_skipped(train=train_read, val=val_read)

    val_captions = ValCaptions(val_set, tokenizer, config, loader is not None) \
        if config.captioning.select_on and val_set is not None and len(val_set) else None
    per_epoch, c = steps_per_epoch(config, len(train_set)), config.captioning
    starts = train_set.first_caption
    self_critical = SelfCritical([train_set.caption_ids[a:b] for a, b in zip(starts, starts[1:])],
                                 specials, c.scst_samples, generation_length(config)) \
        if c.scst_epochs else None
    module = CaptioningModule(model, c, config.train, per_epoch * config.train.epochs, val_captions, self_critical,
                              per_epoch * (config.train.epochs - c.scst_epochs), config.seed)
    summary = run_summary("captioning", model, tokenizer, captioned_split(train_set, train_read),
                          None if val_set is None else captioned_split(val_set, val_read))
    datamodule = EpochDataModule(train_set, val_set, config, feature_collate(config, collate_captions), PairSampler)

    def save() -> None:  # after training: the exported weights are the selected ones (on_train_end)
        if module.best["weights"]:
            summary["selected"] = {"on": f"val_{config.captioning.select_on}", "score": module.best["score"],
                                   "epoch": module.best["epoch"]}
        save_model_dir(model_dir, model.cpu(), config, tokenizer, None)

    # Without a test split, the finished model is measured on val (a recipe that tunes on val reports it).
    return Prepared(module, datamodule, save, summary)
