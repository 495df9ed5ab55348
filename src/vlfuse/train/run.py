"""The training loop every task shares: a task's `prepare` gives model and data; fit with Lightning, export,
evaluate with the task's `evaluate`. No task is named here (vlfuse.tasks picks them)."""

from __future__ import annotations

import csv
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
from ..data.feature_cache import check_cache_current, check_cache_task
from ..data.loading import check_task_format
from ..data.vqa_dataset import EpochSampler, collate_groups
from ..data.vqa_stream import StreamedVQADataset, check_stream
from ..errors import ConfigError, DataError
from ..models.init_weights import check_init_dir, init_from_dir
from .checkpoint_io import CheckpointWriteError, SafetensorsCheckpointIO
from .control import EARLY, INTERRUPTED, RunControl, TrainingDiverged, check_finite, stop_summary
from .freeze import KeepFrozenInEval, freeze
from .lock import out_dir_lock


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
    stopped_by: str | None = None  # "time cap", "interrupted" (Ctrl-C), ...; None: the planned steps were trained
    note: str | None = None  # the plain line that says a run ended before its planned steps


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
    """Join metrics.csv files of an interrupted and a resumed run into one history.

    A resumed part starts at its checkpoint's step and logs those steps again, so an earlier part's
    rows from that step on are dropped: each step is in the history once.
    """
    tables, keys = [], []
    for part in parts:
        if part.is_file():
            with part.open(newline="") as f:
                reader = csv.DictReader(f)
                keys += [k for k in reader.fieldnames or [] if k not in keys]
                tables.append(list(reader))
    rows, later = [], math.inf  # the first step of the parts after this one
    for table in reversed(tables):
        rows = [r for r in table if _step(r) < later] + rows
        later = min([later] + [step for r in table if (step := _step(r)) >= 0])
    with target.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def _step(row: dict) -> float:
    """A metrics.csv row's step; -1 (kept, superseding nothing) when it has none."""
    try:
        return float(row["step"])
    except (KeyError, TypeError, ValueError):
        return -1.0


@dataclass
class Prepared:
    """What a task hands the shared training loop (`train`)."""

    module: L.LightningModule
    datamodule: L.LightningDataModule
    save: Callable[[], None]  # writes the finished model directory (weights and vocabularies)
    summary: dict  # the task's part of run.json
    held_out: str | None = None  # the split evaluated after training; None: test, else val, as config.data has


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


class CheckpointOnCrash(L.pytorch.callbacks.OnExceptionCheckpoint):
    """last.ckpt when training fails, so --resume can continue; not after a diverged loss (the last
    periodic checkpoint is the finite one) nor after a failed write. Deleting it is `train`'s call,
    which knows whether the run trained its planned steps."""

    def on_exception(self, trainer: L.Trainer, *args, **kwargs) -> None:
        exception = args[-1] if args else kwargs.get("exception")
        if not isinstance(exception, (TrainingDiverged, CheckpointWriteError)):
            super().on_exception(trainer, *args, **kwargs)

    def teardown(self, trainer: L.Trainer, *args, **kwargs) -> None:
        pass


def make_trainer(config: Config, run: RunDirs, progress: bool, control: RunControl | None = None) -> L.Trainer:
    """Lightning's Trainer for this run; a device setup Lightning refuses (e.g. FSDP on a CPU) is a
    one-line config error naming the keys."""
    try:
        return _trainer(config, run, progress, control or RunControl(config, run.last, progress))
    except (ValueError, MisconfigurationException) as error:
        t = config.train
        raise ConfigError(f"train.accelerator={t.accelerator}, devices={t.devices}, strategy={t.strategy}, "
                          f"precision={t.precision}: {error}") from None


def _trainer(config: Config, run: RunDirs, progress: bool, control: RunControl) -> L.Trainer:
    t = config.train
    return L.Trainer(
        max_epochs=t.epochs,
        reload_dataloaders_every_n_epochs=1 if config.data.stream else 0,  # streams take the epoch at start
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=t.precision,
        gradient_clip_val=t.grad_clip or None,
        log_every_n_steps=t.log_every_n_steps,
        # Rows reach the disk with each checkpoint, so a killed run's log holds every step it resumes after.
        logger=L.pytorch.loggers.CSVLogger(run.out, name="", version="logs",
                                           flush_logs_every_n_steps=t.checkpoint_every_n_steps),
        callbacks=[
            control,
            L.pytorch.callbacks.ModelCheckpoint(dirpath=run.last.parent, every_n_train_steps=t.checkpoint_every_n_steps,
                                                save_last=True, save_top_k=0, enable_version_counter=False),
            CheckpointOnCrash(dirpath=run.last.parent, filename="last"),
            *([KeepFrozenInEval(t.freeze)] if t.freeze else []),
            *([L.pytorch.callbacks.EMAWeightAveraging(decay=t.ema_decay)] if t.ema_decay else []),
            *early_stopping_callbacks(config, run),
        ],
        plugins=[SafetensorsCheckpointIO()],
        use_distributed_sampler=False,  # EpochSampler splits the data across processes itself
        enable_progress_bar=progress and t.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def early_stopping_callbacks(config: Config, run: RunDirs) -> list[L.Callback]:
    """train.early_stopping: Lightning's EarlyStopping on the val metric, and a ModelCheckpoint that keeps
    the best epoch's weights (checkpoints/best.ckpt) for `restore_best`."""
    stop = config.train.early_stopping
    if stop is None:
        return []
    if config.data.val is None:
        raise ConfigError("config key 'train.early_stopping' watches the val split: set data.val, or remove it")
    if stop.patience < 1:
        raise ConfigError(f"config key 'train.early_stopping.patience' must be at least 1, got {stop.patience}")
    return [L.pytorch.callbacks.EarlyStopping(monitor=stop.monitor, mode=stop.mode, patience=stop.patience,
                                              min_delta=stop.min_delta, check_on_train_epoch_end=False),
            L.pytorch.callbacks.ModelCheckpoint(dirpath=run.last.parent, filename="best", monitor=stop.monitor,
                                                mode=stop.mode, save_top_k=1, save_weights_only=True,
                                                enable_version_counter=False)]


def restore_best(trainer: L.Trainer, module: L.LightningModule) -> dict | None:
    """Load the best epoch's weights that early stopping kept (then delete its checkpoint); what happened,
    for run.json."""
    stopper = next((c for c in trainer.callbacks if isinstance(c, L.pytorch.callbacks.EarlyStopping)), None)
    if stopper is None:
        return None
    keeper = next(c for c in trainer.callbacks if isinstance(c, L.pytorch.callbacks.ModelCheckpoint)
                  and c.monitor == stopper.monitor)
    summary = {"monitor": stopper.monitor, "patience": stopper.patience, "stopped_epoch": stopper.stopped_epoch or None,
               "best": None if keeper.best_model_score is None else round(float(keeper.best_model_score), 6)}
    if keeper.best_model_path:
        state = trainer.strategy.checkpoint_io.load_checkpoint(keeper.best_model_path)
        module.load_state_dict(state["state_dict"])
        summary["best_epoch"] = state["epoch"]  # 0-based, as Lightning counts
        trainer.strategy.barrier()
        trainer.strategy.remove_checkpoint(keeper.best_model_path)  # a finished run keeps model/ only
    return summary


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
        # A resumed run's earlier log is set aside first (RunDirs.set_logs_aside), so nothing is lost.
        warnings.filterwarnings("ignore", message=r".*Previous log files in this directory will be deleted.*")
        trainer.fit(prepared.module, datamodule=prepared.datamodule, ckpt_path=ckpt_path)


def warn_skipped(**reads) -> None:
    for name, read in reads.items():
        if read is not None and read.skipped.count:
            print(f"warning: {name}: {read.skipped.summary()}", file=sys.stderr)


Prepare = Callable[[Config, Path, bool, bool], Prepared]  # (config, model_dir, resume, progress)
Evaluate = Callable[[Path, Config, str, "Path | None", bool], dict]  # (model_dir, config, split, out_json, progress)


def run_task(config: Config, prepare: Prepare, evaluate: Evaluate, *, resume: bool = False,
             progress: bool = True) -> TrainResult:
    """Train what `prepare` builds for `config`, export it to OUT_DIR/model, `evaluate` it on the test
    split (val where the data has no test split, as Flickr8k's here). `vlfuse.tasks.train` picks the
    two functions of config.task; this loop knows no task.

    One run per out_dir at a time (a lock file). A run stopped before its planned steps (time cap,
    Ctrl-C) keeps checkpoints/last.ckpt for --resume; a finished one deletes it.
    """
    check_task_format(config.task, config.data)
    check_stream(config)
    check_cache_task(config)
    if config.train.init and not resume:  # before any cache is built
        check_init_dir(config.train.init)
    run = RunDirs(Path(config.out_dir))
    with out_dir_lock(run.out):
        return _train(config, run, prepare, evaluate, resume, progress)


def _train(config: Config, run: RunDirs, prepare: Prepare, evaluate: Evaluate, resume: bool,
           progress: bool) -> TrainResult:
    start = time.time()
    L.seed_everything(config.seed, workers=True, verbose=False)
    run.check(resume)
    prepared = prepare_run(config, run, prepare, resume, progress)
    previous_logs = run.set_logs_aside(resume)
    control = RunControl(config, run.last, progress)
    trainer = make_trainer(config, run, progress, control)
    fit(trainer, prepared, run.last if resume else None)
    if control.stopped_by is None and (best := restore_best(trainer, prepared.module)) is not None:
        prepared.summary["early_stopping"] = best

    steps, planned = trainer.global_step, control.planned_steps
    # Short of the planned steps with no cap or Ctrl-C: a val-watching callback (train.early_stopping,
    # captioning.patience) that asked the trainer to stop ended the run on purpose.
    stopped_by = control.stopped_by or (None if steps >= planned else EARLY if trainer.should_stop else "an early stop")
    note, interrupted = stop_summary(stopped_by, steps, planned), stopped_by == INTERRUPTED
    test_metrics = None
    if trainer.global_rank == 0:
        run.join_logs(previous_logs)
        if not interrupted:
            save_model(prepared, run)
            test_metrics = evaluate_after_training(run, config, evaluate, progress, note and {
                "stopped_by": stopped_by, "steps": steps, "planned_steps": planned, "note": note}, prepared.held_out)
        if stopped_by in (None, EARLY):
            run.last.unlink(missing_ok=True)  # finished: nothing left to resume
        seconds = control.elapsed()
        summary = {
            "steps": steps, "planned_steps": planned, "epochs_completed": trainer.current_epoch,
            "stopped_by": stopped_by, "interrupted": interrupted, "wall_seconds": round(time.time() - start, 1),
            "training_seconds": round(seconds, 1),
            "samples_per_second": round(steps * config.train.batch_images * world_size(config) / max(seconds, 1e-9), 1),
            **({"note": note} if note else {}), **prepared.summary,
        }
        (run.out / "run.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return TrainResult(run.model_dir, run.out, test_metrics, time.time() - start, interrupted, stopped_by, note)


def prepare_run(config: Config, run: RunDirs, prepare: Prepare, resume: bool, progress: bool) -> Prepared:
    """The task's model and data, with --init weights and frozen parts applied; refuses empty data."""
    prepared = prepare(config, run.model_dir, resume, progress)
    datamodule = prepared.datamodule
    train_set, val_set = getattr(datamodule, "train_set", None), getattr(datamodule, "val_set", None)
    if train_set is not None and not isinstance(train_set, StreamedVQADataset) and len(train_set) == 0:
        raise ConfigError(f"no usable training samples in data.train of {config.data.root}")
    if config.data.val is not None and (val_set is None or len(val_set) == 0):
        print("warning: the val split (data.val) has no usable samples: training without validation",
              file=sys.stderr)
    if config.train.init and not resume:  # a resumed run takes every weight from its checkpoint
        prepared.summary["init"] = init_from_dir(prepared.module.model, config, run.model_dir)
        check_cache_current(config, prepared.module.model)
    if config.train.freeze:  # before the optimiser is built, on a resumed run too
        prepared.summary.update(freeze(prepared.module.model, config.train.freeze))
    return prepared


def save_model(prepared: Prepared, run: RunDirs) -> None:
    """Export the trained model; never a non-finite one, and a full disk is one line naming the folder."""
    check_finite(prepared.module, f"the model to {run.model_dir}")
    try:
        prepared.save()
    except OSError as exc:
        raise DataError(f"could not write the model: {exc.strerror or exc}", path=run.model_dir) from None


def evaluate_after_training(run: RunDirs, config: Config, evaluate: Evaluate, progress: bool,
                            stop: dict | None, held_out: str | None = None) -> dict | None:
    """Metrics of the held-out split (`held_out`, else test, else val) into OUT_DIR/eval.json, with what cut
    training short (`stop`) when something did. An empty split is a warning, not an accuracy over 0 questions."""
    split = held_out or ("test" if config.data.test is not None else "val" if config.data.val is not None else None)
    if split is None:
        return None
    out_json = run.out / "eval.json"
    try:
        metrics = evaluate(run.model_dir, config, split, out_json, progress)
    except EmptySplitError as exc:
        print(f"warning: not evaluated: {exc}", file=sys.stderr)
        return None
    if stop:
        metrics["training"] = stop
        out_json.write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    return metrics


class EmptySplitError(DataError):
    """A split to evaluate holds no usable sample: there is no score to report."""
