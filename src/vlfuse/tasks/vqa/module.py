"""Task vqa's LightningModule (answer classification) and `prepare_vqa`: model and data for the shared loop."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ...config import Config
from ...data.cached_inputs import WithTextStates, cached_inputs
from ...data.feature_cache import feature_loader
from ...data.knowledge_graph import (join_scene_graphs, knowledge_graph_summary, relation_ids, save_knowledge_graph,
                                     training_knowledge_graph)
from ...data.loading import read_split
from ...data.scene_graph import entity_names, scene_graph_summary, training_scene_graphs
from ...data.subsample import sample_images
from ...data.vqa_dataset import IGNORE_INDEX
from ...losses.soft_score import dense_soft_targets, soft_score_bce
from ...models.factory import build_model
from ...models.saved import save_model_dir, save_vocabularies
from ...train.run import EpochDataModule, Prepared, steps_per_epoch, warn_skipped
from ..base import TaskModule, run_summary, split_summary
from .data import no_training_samples, vocabularies, vqa_collate, vqa_datasets


def answer_logits(model, batch: dict) -> torch.Tensor:
    """The model's logits for a collated batch: its images or (data.feature_cache) their cached features,
    its token ids with (a frozen text encoder's cache) their cached states, its scene graphs if any."""
    logits, _ = model(batch.get("images"), batch["input_ids"], batch["attention_mask"], batch["image_index"],
                      graph=batch.get("scene_graph"), image_features=batch.get("image_features"),
                      text_states=batch.get("text_states"))
    return logits


class VQAModule(TaskModule):
    """Cross-entropy over the answer classes (or BCE on VQA soft scores); logs loss and accuracy."""

    shown = ("loss", "acc")

    def logits(self, batch: dict) -> torch.Tensor:
        return answer_logits(self.model, batch)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        logits, labels = self.logits(batch), batch["labels"]
        return {"loss": self.loss(logits, batch), "acc": (logits.argmax(-1) == labels).sum() / labels.numel()}

    def batch_size(self, batch: dict) -> int:
        return batch["labels"].numel()

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """Cross-entropy on the answer class, or (head loss soft_bce) BCE on every answer's VQA soft score."""
        if getattr(self.model.head, "loss", "cross_entropy") == "soft_bce":
            return soft_score_bce(logits, dense_soft_targets(batch["soft_targets"], tuple(logits.shape)))
        return F.cross_entropy(logits, batch["labels"], ignore_index=IGNORE_INDEX)


def prepare_vqa(config: Config, model_dir: Path, resume: bool, progress: bool) -> Prepared:
    """Task vqa: questions grouped by image, answers as classes."""
    train_read = read_split(config.data, "train")
    train_read.samples = sample_images(train_read.samples, config.data.train_fraction, config.seed)
    if not any(s.answer is not None for s in train_read.samples):
        raise no_training_samples(train_read.skipped)
    val_read = read_split(config.data, "val") if config.data.val else None
    scenes = training_scene_graphs(config, train=train_read, val=val_read)  # {} without data.scene_graphs
    # None without data.knowledge_graph; per_image: each image's own graph (data.knowledge_graph: per_sample)
    knowledge, per_image = training_knowledge_graph(config, train=train_read, val=val_read)
    graphs = join_scene_graphs(scenes, knowledge, config.data.knowledge_hops, per_image, config.data.knowledge_facts)
    tokenizer, answers = vocabularies(config, train_read.samples, model_dir, resume, entity_names(graphs))
    save_vocabularies(model_dir, config, tokenizer, answers)
    save_knowledge_graph(model_dir, knowledge)
    model = build_model(config, tokenizer.get_vocab_size(), len(answers))
    # data.feature_cache: the items carry the frozen encoders' cached outputs, not images (and text states).
    loader = feature_loader(config, model.image_encoder, train_read.samples + (val_read.samples if val_read else []),
                            progress)
    train_set, val_set = vqa_datasets(config, train_read, val_read, tokenizer, answers, loader, progress)
    warn_skipped(train=train_read, val=val_read)

    steps = train_set.batches_per_rank if config.data.stream else steps_per_epoch(config, len(train_set))
    module = VQAModule(model, config.train, steps * config.train.epochs)
    stream = {"stream": train_set.summary()} if config.data.stream else {}
    summary = run_summary("vqa", model, tokenizer,
                          split_summary(train_read, images=train_set.num_images, questions=train_set.num_questions,
                                        unanswerable=train_set.unanswerable, **stream),
                          None if val_set is None else split_summary(val_read, images=len(val_set),
                                                                     questions=val_set.num_questions),
                          answers=len(answers))
    if graphs:
        summary["scene_graphs"] = scene_graph_summary(scenes)
    if knowledge is not None:
        summary["knowledge_graph"] = knowledge_graph_summary(knowledge, graphs, scenes, per_image)
    (train_items, val_items), collate = cached_inputs(config, model.text_encoder, [train_set, val_set],
                                                      vqa_collate(graphs, tokenizer, relation_ids(knowledge)), progress)
    summary["frozen_text_states_cached"] = isinstance(train_items, WithTextStates)
    return Prepared(module, EpochDataModule(train_items, val_items, config, collate),
                    lambda: save_model_dir(model_dir, model.cpu(), config, tokenizer, answers), summary)
