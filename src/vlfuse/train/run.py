"""`vlfuse train`: read data, build vocabularies and model, fit with Lightning, export, evaluate."""

from __future__ import annotations

import csv
import importlib
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader, Dataset

from ..config import Config
from ..data.answers import AnswerVocab
from ..data.feature_cache import check_cache_current, check_cache_task, feature_collate, feature_loader
from ..data.loading import check_task_format, read_split
from ..data.scene_graph import (SceneGraphCollate, encode_scene_graphs, entity_names, read_scene_graphs,
                                scene_graph_summary, training_scene_graphs)
from ..data.subsample import sample_images
from ..data.tokenizer import build_tokenizer, load_tokenizer
from ..data.vqa_dataset import EpochSampler, GroupedVQADataset, collate_groups
from ..data.vqa_stream import StreamedVQADataset, check_stream
from ..errors import ConfigError
from ..models.factory import build_model, text_tokenizer_file
from ..models.saved import ANSWERS, TOKENIZER, save_model_dir, save_vocabularies
from .checkpoint_io import SafetensorsCheckpointIO
from .freeze import KeepFrozenInEval, freeze
from .module import VQAModule


class _NoAdverts(logging.Filter):
    """Drops Lightning's tips about its cloud services: noise in an offline tool's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdverts())


@dataclass
class TrainResult:
    model_dir: Path
    out_dir: Path
    test_metrics: dict | None
    wall_seconds: float
    interrupted: bool


class EpochDataModule(L.LightningDataModule):
    """Loaders with a per-epoch deterministic order, so an interrupted epoch resumes where it stopped.

    `collate` batches the dataset's items; `sampler` is EpochSampler or a subclass (retrieval's
    PairSampler also hands the dataset the epoch).
    """

    def __init__(self, train_set: Dataset, val_set: Dataset | None, config: Config,
                 collate: Callable = partial(collate_groups, with_samples=False),
                 sampler: type[EpochSampler] = EpochSampler):
        super().__init__()
        self.train_set, self.val_set, self.config = train_set, val_set, config
        self.collate, self.sampler = collate, sampler

    def _loader(self, dataset: Dataset, sampler: EpochSampler) -> DataLoader:
        workers = self.config.train.num_workers
        return DataLoader(dataset, batch_size=self.config.train.batch_images, sampler=sampler,
                          collate_fn=self.collate, num_workers=workers, persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        # After a restore, skip the batches of the interrupted epoch that were trained. A checkpoint
        # written at a batch's end counts that batch as processed but not yet completed.
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if isinstance(self.train_set, StreamedVQADataset):  # data.stream: a new loader each epoch (make_trainer)
            stream = self.train_set
            stream.place(trainer.global_rank, trainer.world_size)
            stream.set_epoch(trainer.current_epoch)  # the workers copy the stream when the loader starts them
            stream.resume_batches = done if 0 < done < stream.batches_per_rank else 0
            return DataLoader(stream, batch_size=self.config.train.batch_images, collate_fn=self.collate,
                              num_workers=self.config.train.num_workers)
        sampler = self.sampler(len(self.train_set), self.config.seed, True, trainer.global_rank, trainer.world_size)
        if 0 < done < math.ceil(len(sampler) / self.config.train.batch_images):
            sampler.skip = done * self.config.train.batch_images
        return self._loader(self.train_set, sampler)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None or len(self.val_set) == 0:
            return []
        trainer = self.trainer
        return self._loader(self.val_set, self.sampler(len(self.val_set), 0, False, trainer.global_rank,
                                                       trainer.world_size))


def _merge_csv(parts: list[Path], target: Path) -> None:
    """Join metrics.csv files of an interrupted and a resumed run into one history."""
    rows, keys = [], []
    for part in parts:
        if part.is_file():
            with part.open(newline="") as f:
                reader = csv.DictReader(f)
                keys += [k for k in reader.fieldnames or [] if k not in keys]
                rows += list(reader)
    with target.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


@dataclass
class Prepared:
    """What a task hands the shared training loop (`train`)."""

    module: L.LightningModule
    datamodule: L.LightningDataModule
    save: Callable[[], None]  # writes the finished model directory (weights and vocabularies)
    summary: dict  # the task's part of run.json


@dataclass
class RunDirs:
    """out_dir's layout: model/ (the export), checkpoints/ (last.ckpt, to resume), logs/ (metrics.csv)."""

    out: Path

    @property
    def model_dir(self) -> Path:
        return self.out / "model"

    @property
    def last(self) -> Path:
        return self.out / "checkpoints" / "last.ckpt"

    @property
    def log_dir(self) -> Path:
        return self.out / "logs"

    def check(self, resume: bool) -> None:
        """Refuse to resume without a checkpoint, and to train over an interrupted or finished run."""
        out, last = self.out, self.last
        if resume and not last.is_file():
            raise ConfigError(f"--resume: no checkpoint to resume from at {last}")
        if not resume and last.is_file():
            raise ConfigError(f"{out} already holds a run: pass --resume to continue it, or set out_dir elsewhere")
        if not resume and ((out / "run.json").is_file() or (self.model_dir / "model.safetensors").is_file()):
            raise ConfigError(f"{out} already holds a finished run: set out_dir elsewhere, or delete it to train again")

    def set_logs_aside(self, resume: bool) -> list[Path]:
        """Lightning's CSV logger starts its file afresh: keep the interrupted run's part for `join_logs`."""
        log_dir = self.log_dir
        if not (resume and (log_dir / "metrics.csv").is_file()):
            return []
        part = log_dir / f"metrics.part{len(list(log_dir.glob('metrics.part*.csv')))}.csv"
        (log_dir / "metrics.csv").rename(part)
        return sorted(log_dir.glob("metrics.part*.csv"))

    def join_logs(self, previous: list[Path]) -> None:
        if previous:
            _merge_csv(previous + [self.log_dir / "metrics.csv"], self.log_dir / "metrics.csv")
            for part in previous:
                part.unlink()


def world_size(config: Config) -> int:
    """Processes that share the data: one per device and node under a sharding strategy."""
    t = config.train
    sharded = any(name in t.strategy for name in ("ddp", "fsdp", "deepspeed"))
    return t.devices * t.num_nodes if sharded else 1


def steps_per_epoch(config: Config, items: int) -> int:
    """Optimizer steps in an epoch of `items` dataset items (each process takes its share)."""
    return math.ceil(math.ceil(items / world_size(config)) / config.train.batch_images)


def make_trainer(config: Config, run: RunDirs, progress: bool) -> L.Trainer:
    """Lightning's Trainer for this run; a device setup Lightning refuses (e.g. FSDP on a CPU) is a
    one-line config error naming the keys."""
    try:
        return _trainer(config, run, progress)
    except (ValueError, MisconfigurationException) as error:
        t = config.train
        raise ConfigError(f"train.accelerator={t.accelerator}, devices={t.devices}, strategy={t.strategy}, "
                          f"precision={t.precision}: {error}") from None


def _trainer(config: Config, run: RunDirs, progress: bool) -> L.Trainer:
    t = config.train
    return L.Trainer(
        max_epochs=t.epochs,
        reload_dataloaders_every_n_epochs=1 if config.data.stream else 0,  # streams take the epoch at start
        max_time={"minutes": t.max_minutes} if t.max_minutes else None,
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=t.precision,
        gradient_clip_val=t.grad_clip or None,
        log_every_n_steps=t.log_every_n_steps,
        logger=L.pytorch.loggers.CSVLogger(run.out, name="", version="logs"),
        callbacks=[
            L.pytorch.callbacks.ModelCheckpoint(dirpath=run.last.parent, every_n_train_steps=t.checkpoint_every_n_steps,
                                                save_last=True, save_top_k=0),
            L.pytorch.callbacks.OnExceptionCheckpoint(dirpath=run.last.parent, filename="last"),
            *([KeepFrozenInEval(t.freeze)] if t.freeze else []),
        ],
        plugins=[SafetensorsCheckpointIO()],
        use_distributed_sampler=False,  # EpochSampler splits the data across processes itself
        enable_progress_bar=progress and t.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def fit(trainer: L.Trainer, prepared: Prepared, ckpt_path: Path | None) -> None:
    with warnings.catch_warnings():
        # Our loader resumes mid-epoch through EpochSampler.skip, which Lightning cannot see.
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
        # OnExceptionCheckpoint makes Lightning look for a "last" checkpoint even on a fresh run;
        # fresh runs are guarded by RunDirs.check, so its notes about that are noise.
        warnings.filterwarnings("ignore", message=r".*\(ckpt_path=None\)` was called without a model.*")
        warnings.filterwarnings("ignore", message=r'.*ckpt_path="last"\) is set, but there is no last checkpoint.*')
        # A config without a val split; frozen pretrained encoders, which stay in eval mode on purpose.
        warnings.filterwarnings("ignore", message=r".*Total length of `list` across ranks is zero.*")
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
        trainer.fit(prepared.module, datamodule=prepared.datamodule, ckpt_path=ckpt_path)


def warn_skipped(**reads) -> None:
    for name, read in reads.items():
        if read is not None and read.skipped.count:
            print(f"warning: {name}: {read.skipped.summary()}", file=sys.stderr)


# task -> module with its prepare (model + data for the shared loop) and evaluate functions; imported on
# use, so one task's code never loads for another. Task vqa's live below.
TASKS = {
    "vqa": (__name__, "prepare_vqa", "evaluate_vqa_split"),
    "retrieval": ("vlfuse.train.retrieval", "prepare_retrieval", "evaluate_retrieval_split"),
    "captioning": ("vlfuse.train.captioning", "prepare_captioning", "evaluate_captioning_split"),
    "matching": ("vlfuse.train.labelled", "prepare_labelled", "evaluate_labelled_split"),
    "classification": ("vlfuse.train.labelled", "prepare_labelled", "evaluate_labelled_split"),
    "dialogue": ("vlfuse.train.dialogue", "prepare_dialogue", "evaluate_dialogue_split"),
    "pretrain": ("vlfuse.train.pretrain", "prepare_pretrain", "evaluate_pretrain_split"),
}


def task_function(task: str, which: str) -> Callable:
    """The `which` ("prepare" or "evaluate") function of `task`."""
    module, prepare, evaluate = TASKS[task]
    return getattr(importlib.import_module(module), prepare if which == "prepare" else evaluate)


def train(config: Config, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train the model of `config.task`, export it to OUT_DIR/model, evaluate it on the test (else val) split."""
    check_task_format(config.task, config.data)
    check_stream(config)
    check_cache_task(config)
    start = time.time()
    L.seed_everything(config.seed, workers=True, verbose=False)
    run = RunDirs(Path(config.out_dir))
    run.check(resume)
    prepare = task_function(config.task, "prepare")
    prepared = prepare(config, run.model_dir, resume, progress)
    if config.train.init and not resume:  # a resumed run takes every weight from its checkpoint
        from .pretrain import init_from_dir

        prepared.summary["init"] = init_from_dir(prepared.module.model, config, run.model_dir)
        check_cache_current(config, prepared.module.model)
    if config.train.freeze:  # before the optimiser is built, on a resumed run too
        prepared.summary.update(freeze(prepared.module.model, config.train.freeze))
    previous_logs = run.set_logs_aside(resume)
    trainer = make_trainer(config, run, progress)
    fit(trainer, prepared, run.last if resume else None)

    test_metrics = None
    if trainer.global_rank == 0:
        run.join_logs(previous_logs)
        if not trainer.interrupted:
            prepared.save()
            # The held-out split: test, or val when the data has no test split (a val-only set, Flickr8k's).
            split = "test" if config.data.test is not None else "val" if config.data.val is not None else None
            if split is not None:
                test_metrics = evaluate_split(run.model_dir, config, split, run.out / "eval.json", progress)
        summary = {
            "steps": trainer.global_step, "epochs_completed": trainer.current_epoch,
            "interrupted": trainer.interrupted, "wall_seconds": round(time.time() - start, 1),
            **prepared.summary,
        }
        (run.out / "run.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return TrainResult(run.model_dir, run.out, test_metrics, time.time() - start, trainer.interrupted)


def _vocabularies(config: Config, samples, model_dir: Path, resume: bool, extra_texts: list[str] = ()):
    """extra_texts: more words for a word tokenizer (scene-graph entity names) besides the questions."""
    if resume:  # a resumed run must keep the exact token and answer ids of the interrupted one
        return load_tokenizer(model_dir / TOKENIZER), AnswerVocab.load(model_dir / ANSWERS)
    pretrained = text_tokenizer_file(config)  # a pretrained text encoder reads only its own vocabulary
    if config.train.init and not pretrained:  # keep the ids of the words the --init model learnt
        from ..models.init_weights import init_tokenizer

        tokenizer = init_tokenizer(config.train.init, [s.question for s in samples] + list(extra_texts))
    else:
        tokenizer = load_tokenizer(pretrained) if pretrained else build_tokenizer(
            [s.question for s in samples] + list(extra_texts))
    answers = AnswerVocab.build((s.answer for s in samples if s.answer is not None), config.data.max_answers)
    return tokenizer, answers


def prepare_vqa(config: Config, model_dir: Path, resume: bool, progress: bool) -> Prepared:
    """Task vqa: questions grouped by image, answers as classes."""
    train_read = read_split(config.data, "train")
    train_read.samples = sample_images(train_read.samples, config.data.train_fraction, config.seed)
    val_read = read_split(config.data, "val") if config.data.val else None
    graphs = training_scene_graphs(config, train=train_read, val=val_read)  # {} without data.scene_graphs
    tokenizer, answers = _vocabularies(config, train_read.samples, model_dir, resume, entity_names(graphs))
    save_vocabularies(model_dir, config, tokenizer, answers)
    model = build_model(config, tokenizer.get_vocab_size(), len(answers))
    # data.feature_cache: the items carry the frozen image encoder's cached features, not images.
    loader = feature_loader(config, model.image_encoder, train_read.samples + (val_read.samples if val_read else []),
                            progress)
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
        raise ConfigError("no usable training samples: " + train_read.skipped.summary())
    val_set = (GroupedVQADataset(val_read.samples, *data_args, val_read.skipped, progress, "Loading val images",
                                 image_loader=loader) if val_read else None)
    warn_skipped(train=train_read, val=val_read)

    steps = train_set.batches_per_rank if config.data.stream else steps_per_epoch(config, len(train_set))
    module = VQAModule(model, config.train, steps * config.train.epochs)
    summary = {
        "train": {"images": train_set.num_images, "questions": train_set.num_questions,
                  "unanswerable": train_set.unanswerable, "skipped": train_read.skipped.as_dict(),
                  **({"stream": train_set.summary()} if config.data.stream else {})},
        "val": None if val_set is None else {"images": len(val_set), "questions": val_set.num_questions,
                                             "skipped": val_read.skipped.as_dict()},
        "answers": len(answers), "vocab": tokenizer.get_vocab_size(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    collate = partial(collate_groups, with_samples=False)
    if graphs:  # each batch also carries its images' scene graphs
        collate = SceneGraphCollate(collate, encode_scene_graphs(graphs, tokenizer))
        summary["scene_graphs"] = scene_graph_summary(graphs)
    collate = feature_collate(config, collate)
    return Prepared(module, EpochDataModule(train_set, val_set, config, collate),
                    lambda: save_model_dir(model_dir, model.cpu(), config, tokenizer, answers), summary)


def evaluate_split(model_dir: Path, config: Config, split: str, out_json: Path | None, progress: bool = True) -> dict:
    """Evaluate a saved model on one split of `config.data`; write metrics (+ predictions) as JSON."""
    check_task_format(config.task, config.data)
    return task_function(config.task, "evaluate")(model_dir, config, split, out_json, progress)


def evaluate_vqa_split(model_dir: Path, config: Config, split: str, out_json: Path | None, progress: bool) -> dict:
    """Task vqa: accuracy overall, per group and per question family, plus each prediction."""
    from ..evaluate import evaluate_samples
    from ..models.saved import load_model_dir

    read = read_split(config.data, split)
    graphs = read_scene_graphs(config.data, split, read.samples) if config.data.scene_graphs else None
    metrics, records = evaluate_samples(load_model_dir(model_dir), read.samples, read.skipped, progress=progress,
                                        scene_graphs=graphs)
    if out_json is not None:
        out_json.write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
        out_json.with_name(out_json.stem + "_predictions.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return metrics
