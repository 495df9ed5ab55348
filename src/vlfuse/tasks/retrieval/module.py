"""Task retrieval's LightningModule (ITC + optional VSE++ hinge + ITM on hard negatives) and
`prepare_retrieval`."""

from __future__ import annotations

from pathlib import Path

import torch

from ...config import Config, RetrievalConfig, TrainConfig
from ...data.caption_dataset import CaptionDataset, PairSampler
from ...data.cached_inputs import WithTextStates
from ...data.caption_edits import CaptionEdits
from ...data.feature_cache import caches_text, feature_loader, text_feature_states
from ...data.formats.common import SkipLog
from ...data.loading import read_split
from ...data.subsample import sample_images
from ...errors import ConfigError
from ...losses.contrastive import edited_caption_loss
from ...losses.hinge import vse_hinge_loss
from ...losses.itm import itm_loss, itm_pairs, sample_hard_negatives
from ...models.factory import build_retrieval_model
from ...models.retrieval import RetrievalModel
from ...models.saved import save_model_dir, save_vocabularies
from ...train.run import EpochDataModule, Prepared, steps_per_epoch, warn_skipped
from ..base import TaskModule, captioned_split, run_summary, run_tokenizer
from .data import retrieval_items
from .evaluate import embed_dataset, mirrored_features
from .querybank import save_querybank


def same_text(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, B] bool: rows i and j hold the same caption (never a negative for each other); diagonal False."""
    ids = input_ids.masked_fill(~attention_mask.bool(), -1)
    same = (ids[:, None, :] == ids[None, :, :]).all(-1)
    return same & ~torch.eye(len(ids), dtype=torch.bool, device=ids.device)


class RetrievalModule(TaskModule):
    """edits: the training captions' substitutes that retrieval.caption_edits draws its negatives from (None: off)."""

    shown = ("loss", "acc")

    def __init__(self, model: RetrievalModel, task: RetrievalConfig, train_config: TrainConfig, total_steps: int,
                 seed: int = 0, edits: CaptionEdits | None = None):
        super().__init__(model, train_config, total_steps, seed)
        self.task, self.edits = task, edits

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """{"itc", "acc", ["edits"], ["hinge"], ["itm", "itm_acc"], "loss"} of one batch of row-aligned pairs."""
        model, task = self.model, self.task
        image = model.encode_images(batch.get("images"), batch.get("image_features"))  # features: data.feature_cache
        text = model.encode_texts(batch["input_ids"], batch["attention_mask"], batch.get("text_states"))
        image_emb, text_emb = model.head(image, text)
        out = {"itc": model.head.loss(image_emb, text_emb)}
        loss = out["itc"]
        similarity = image_emb @ text_emb.T
        positives = same_text(batch["input_ids"], batch["attention_mask"])
        batch_size = len(similarity)
        target = torch.arange(batch_size, device=similarity.device)
        out["acc"] = (similarity.argmax(1) == target).float().mean()  # in-batch image -> text top-1
        if self.edits is not None:
            out["edits"] = self._edited_caption_loss(batch, image_emb, text_emb)
            loss = loss + out["edits"]
        if task.hinge_weight:
            out["hinge"] = vse_hinge_loss(similarity, task.hinge_margin, task.hinge_max_violation, positives)
            loss = loss + task.hinge_weight * out["hinge"]
        if model.itm_head is not None and task.itm_weight:
            negatives = ~(positives | torch.eye(batch_size, dtype=torch.bool, device=similarity.device))
            if negatives.any(1).all() and negatives.any(0).all():
                drawn = sample_hard_negatives(similarity * model.head.scale, positives, task.negatives_temperature,
                                              self.generator())
                image_index, text_index, labels = itm_pairs(*drawn)
            else:  # a batch of one (or of one caption): positives only, so every parameter still trains
                image_index = text_index = target
                labels = torch.ones_like(target)
            logits = model.match(image.index_select(image_index), text.index_select(text_index))
            out["itm"] = itm_loss(logits, labels)
            out["itm_acc"] = (logits.argmax(-1) == labels).float().mean()
            loss = loss + task.itm_weight * out["itm"]
        out["loss"] = loss
        return out

    def _edited_caption_loss(self, batch: dict, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        ids, mask, made = self.edits.edit_batch(batch["input_ids"].cpu(), batch["attention_mask"].cpu(),
                                                self.task.caption_edits, self.generator("cpu"))
        device = image_emb.device
        edited = self.model.encode_texts(ids.flatten(0, 1).to(device), mask.flatten(0, 1).to(device))
        edited_emb = self.model.head.embed_text(edited).view(*ids.shape[:2], -1)
        return edited_caption_loss(image_emb, text_emb, edited_emb, made.to(device), self.model.head.scale)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("logit_scale", self.model.head.scale, batch_size=self.batch_size(batch))
        return loss


def prepare_retrieval(config: Config, model_dir: Path, resume: bool, progress: bool) -> Prepared:
    """Task retrieval: captioned images, one caption per image in each batch."""
    if config.train.batch_images < 2:
        raise ConfigError("config key 'train.batch_images' must be >= 2 for task retrieval: the other images of a "
                          "batch are each pair's negatives")
    train_read = read_split(config.data, "train")
    train_read.samples = sample_images(train_read.samples, config.data.train_fraction, config.seed)
    val_read = read_split(config.data, "val") if config.data.val else None
    tokenizer = run_tokenizer(config, model_dir, resume, lambda: (c for s in train_read.samples for c in s.captions))
    save_vocabularies(model_dir, config, tokenizer, None)
    model = build_retrieval_model(config, tokenizer.get_vocab_size())
    if config.retrieval.caption_edits and caches_text(config, model.text_encoder):
        raise ConfigError("config key 'retrieval.caption_edits' needs the text encoder to read each edited caption, "
                          "but data.feature_cache serves its frozen states from the cache: set data.cache_text: false")
    # data.feature_cache: the items carry the frozen image encoder's cached features, not images.
    loader = feature_loader(config, model.image_encoder, train_read.samples + (val_read.samples if val_read else []),
                            progress)
    args = (tokenizer, config.data.image_size, config.data.max_question_length)
    train_set = CaptionDataset(train_read.samples, *args, train_read.skipped, progress, "Loading train images",
                               image_loader=loader)
    if config.data.hflip:
        train_set.mirror(config.data.hflip, feature_loader(config, model.image_encoder, train_set.samples,
                                                           progress, mirrored=True))
    if len(train_set) < 2:
        raise ConfigError(f"task retrieval needs at least 2 captioned training images, found {len(train_set)}"
                          + (f"; {train_read.skipped.summary()}" if train_read.skipped.count else ""))
    val_set = CaptionDataset(val_read.samples, *args, val_read.skipped, progress, "Loading val images",
                             image_loader=loader) if val_read else None
    warn_skipped(train=train_read, val=val_read)
    (train_items, val_items), collate = retrieval_items(config, model, [train_set, val_set], progress)

    module = RetrievalModule(model, config.retrieval, config.train,
                             steps_per_epoch(config, len(train_set)) * config.train.epochs, config.seed,
                             CaptionEdits(train_set.caption_ids) if config.retrieval.caption_edits else None)
    summary = run_summary("retrieval", model, tokenizer, captioned_split(train_set, train_read),
                          None if val_set is None else captioned_split(val_set, val_read),
                          frozen_text_states_cached=isinstance(train_items, WithTextStates))
    datamodule = EpochDataModule(train_items, val_items, config, collate, PairSampler)

    def save() -> None:
        save_model_dir(model_dir, model.cpu(), config, tokenizer, None)
        if config.retrieval.querybank:
            save_querybank(model_dir, *embed_querybank(model, config, train_read.samples, args, loader, progress))

    return Prepared(module, datamodule, save, summary)


def embed_querybank(model: RetrievalModel, config: Config, samples: list, args: tuple, loader, progress: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit embeddings (images, captions) of retrieval.querybank random training images and their captions."""
    images = len({str(s.image_path) for s in samples})
    chosen = sample_images(samples, min(1.0, config.retrieval.querybank / max(images, 1)), config.seed)
    dataset = CaptionDataset(chosen, *args, SkipLog(), progress, "Loading the query bank", image_loader=loader)
    states = text_feature_states(config, model.text_encoder, dataset.caption_ids, progress)
    embedded = embed_dataset(model, dataset, config.retrieval.eval_batch, progress, keep_features=False,
                             cached_images=loader is not None, text_states=states,
                             mirrored_images=mirrored_features(config, model, dataset, progress))
    return embedded.images, embedded.texts
