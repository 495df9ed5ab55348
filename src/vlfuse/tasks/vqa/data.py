"""Task vqa's data: questions grouped by image (each image encoded once for all of its questions),
answers as classes; the vocabularies a run builds (or a resumed run keeps)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from ...config import Config
from ...data.answers import AnswerVocab
from ...data.scene_graph import SceneGraphCollate, encode_scene_graphs
from ...data.vqa_dataset import GroupedVQADataset, collate_groups
from ...data.vqa_stream import StreamedVQADataset
from ...errors import ConfigError
from ...models.init_weights import init_tokenizer
from ...models.saved import ANSWERS
from ...train.run import world_size
from ..base import run_tokenizer


def vocabularies(config: Config, samples, model_dir: Path, resume: bool, extra_texts: list[str] = ()):
    """(tokenizer, answers). extra_texts: more words for a word tokenizer (scene-graph entity names)
    besides the questions; with train.init, the --init model's word ids are kept."""
    build = partial(init_tokenizer, config.train.init) if config.train.init else None
    tokenizer = run_tokenizer(config, model_dir, resume, lambda: [s.question for s in samples] + list(extra_texts),
                              **({"build": build} if build else {}))
    if resume:  # a resumed run must keep the exact answer ids of the interrupted one
        return tokenizer, AnswerVocab.load(model_dir / ANSWERS)
    answers = AnswerVocab.build((s.answer for s in samples if s.answer is not None), config.data.max_answers)
    return tokenizer, answers


def no_training_samples(skipped) -> ConfigError:
    """One line: the training split is empty, or every sample in it was skipped (and the first why)."""
    why = f": all {skipped.count} were skipped as bad, e.g. {skipped.skipped[0]}" if skipped.skipped else ""
    return ConfigError(f"no usable training samples (questions with answers) in data.train{why}")


def vqa_datasets(config: Config, train_read, val_read, tokenizer, answers, loader, progress: bool):
    """(train set, val set or None): grouped by image, or (data.stream) a stream of the training images."""
    data_args = (tokenizer, answers, config.data.image_size, config.data.max_question_length)
    if config.data.stream:  # images decoded as they stream by; only the questions are held
        train_set = StreamedVQADataset(train_read.samples, *data_args, batch_size=config.train.batch_images,
                                       world_size=world_size(config), workers=config.train.num_workers,
                                       shuffle_buffer=config.data.shuffle_buffer, seed=config.seed,
                                       on_bad_sample=config.data.on_bad_sample)
    else:
        train_set = GroupedVQADataset(train_read.samples, *data_args, train_read.skipped, progress,
                                      "Loading train images", image_loader=loader)
    if train_set.num_images == 0:
        raise no_training_samples(train_read.skipped)
    val_set = (GroupedVQADataset(val_read.samples, *data_args, val_read.skipped, progress, "Loading val images",
                                 image_loader=loader) if val_read else None)
    return train_set, val_set


def vqa_collate(graphs: dict, tokenizer, relations: dict[str, int]):
    """Batches of image groups; with scene graphs each batch also carries its images' graphs (relations:
    the relation ids, a knowledge graph's included)."""
    collate = partial(collate_groups, with_samples=False)
    if graphs:
        collate = SceneGraphCollate(collate, encode_scene_graphs(graphs, tokenizer, relation_ids=relations))
    return collate
