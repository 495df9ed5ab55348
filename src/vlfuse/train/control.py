"""What the shared loop watches while a run trains: divergence, the time cap, Ctrl-C, progress lines
and the random streams a resumed run must replay.

One Lightning callback, `RunControl`, so every task gets the same behaviour:
- a non-finite loss stops training before the weights take it (nothing non-finite is saved);
- `train.max_minutes` (training time summed over a run and its resumptions) and a first Ctrl-C stop
  at the end of a step, write `last.ckpt` and record why, so `--resume` continues the run;
- every `train.progress_every_n_steps` steps a plain line gives the step, samples/s and the ETA;
- each step draws its randomness (dropout, ...) from (seed, step, rank) alone, so a resumed run makes
  the draws the uninterrupted run made, bit for bit.
"""

from __future__ import annotations

import math
import random
import signal
import sys
import threading
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from ..config import Config
from ..errors import VLFuseError
from ..progress import format_seconds

TIME_CAP, INTERRUPTED, EARLY = "time cap", "interrupted", "early stopping"


class TrainingDiverged(VLFuseError):
    """The loss became NaN or infinite: the run stops before the model takes the step."""


def check_finite(module: torch.nn.Module, what: str) -> None:
    """Refuse to store weights (parameters) that hold NaN or infinity: such a model answers nothing."""
    bad = [name for name, p in module.named_parameters() if not torch.isfinite(p.detach()).all()]
    if bad:
        raise TrainingDiverged(f"not saving {what}: {len(bad)} weight tensors hold NaN or infinity (first: "
                               f"{bad[0]}); training diverged: try a lower train.lr")


class RunControl(L.Callback):
    """The callback described above; `stopped_by` and `planned_steps` tell `train` how the run ended."""

    def __init__(self, config: Config, last: Path, progress: bool):
        t = config.train
        self.seed, self.lr, self.last = config.seed, t.lr, last
        self.max_seconds = None if t.max_minutes is None else 60 * t.max_minutes
        self.every = t.progress_every_n_steps if progress else 0
        self.batch = t.batch_images
        self.stopped_by: str | None = None
        self.planned_steps = 0
        self._elapsed_before, self._checkpoint_lr = 0.0, None  # from a resumed run's checkpoint
        self._start = self._end = self._clock_step = self._clock = None
        self._sigint, self._previous_handler = False, None

    # -- state carried in last.ckpt
    def state_dict(self) -> dict:
        return {"elapsed_seconds": self.elapsed(), "lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        self._elapsed_before, self._checkpoint_lr = state.get("elapsed_seconds", 0.0), state.get("lr")

    def elapsed(self) -> float:
        """Training seconds so far, the earlier parts of a resumed run included."""
        if self._start is None:
            return self._elapsed_before
        return self._elapsed_before + (self._end or time.monotonic()) - self._start

    # -- hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.planned_steps = int(trainer.estimated_stepping_batches)
        self._start = self._clock = time.monotonic()
        self._clock_step = trainer.global_step
        if self._checkpoint_lr is not None and self._checkpoint_lr != self.lr:
            rescale_lr(trainer, self.lr / self._checkpoint_lr)  # a train.lr changed for --resume applies
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        seed_step(self.seed, trainer.global_step, trainer.global_rank, pl_module.device)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        # Every process stops together (one waiting in backward's all-reduce would hang).
        if trainer.strategy.reduce_boolean_decision(not torch.isfinite(loss.detach()).all().item(), all=False):
            raise TrainingDiverged(self._divergence_message(trainer, loss))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every and step % self.every == 0 and trainer.is_global_zero:
            print_line(self.progress_line(step, trainer.world_size), trainer)
        reason = INTERRUPTED if self._sigint else (
            TIME_CAP if self.max_seconds is not None and self.elapsed() >= self.max_seconds else None)
        if trainer.strategy.reduce_boolean_decision(reason is not None, all=False) and step < self.planned_steps:
            self.stopped_by = reason or INTERRUPTED
            trainer.should_stop = True
            trainer.save_checkpoint(self.last, weights_only=False)  # the state a --resume continues from
            # No extra validation on the way out (an epoch's end still has its own): the log then holds
            # what the uninterrupted run's holds.
            epoch_loop = trainer.fit_loop.epoch_loop
            if not epoch_loop.batch_progress.is_last_batch:
                epoch_loop._skip_next_val = True

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        check_finite(pl_module, "a checkpoint")  # the one on disk stays the last finite one

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end = time.monotonic()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    # -- helpers
    def _on_sigint(self, signum, frame) -> None:
        if self._sigint:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self._sigint = True
        print("\nStopping after this step (Ctrl-C again to stop at once) ...", file=sys.stderr, flush=True)

    def progress_line(self, step: int, processes: int = 1) -> str:
        """`step 40/678 (6%) · 85.2 samples/s · ETA 3m 05s`, the rate measured since the last line."""
        now = time.monotonic()
        rate = (step - self._clock_step) / max(now - self._clock, 1e-9)
        self._clock, self._clock_step = now, step
        left = (self.planned_steps - step) / rate if rate > 0 else math.inf
        return (f"step {step}/{self.planned_steps} ({100 * step / max(self.planned_steps, 1):.0f}%) · "
                f"{rate * self.batch * processes:.1f} samples/s · ETA {format_seconds(left)}")

    def _divergence_message(self, trainer: L.Trainer, loss: torch.Tensor) -> str:
        value = loss.detach().float().flatten()[0].item()
        resume = (f"; the last checkpoint ({self.last}) holds finite weights: continue from it with --resume "
                  f"--set train.lr=..." if self.last.is_file() else "")
        return (f"training diverged at step {trainer.global_step}: the loss is {value}. Try a lower train.lr "
                f"(now {self.lr:g}) or train.grad_clip{resume}")


def stop_summary(stopped_by: str | None, steps: int, planned: int) -> str | None:
    """The plain line for a run that ended before its planned steps (None for a finished run)."""
    if stopped_by is None and steps >= planned:
        return None
    if stopped_by == EARLY:  # on purpose: the val score stopped improving, the best epoch is kept
        return f"stopped early at step {steps} of {planned}: the val score stopped improving"
    why = {TIME_CAP: "the time cap", INTERRUPTED: "Ctrl-C"}.get(stopped_by, stopped_by or "a stop")
    line = f"stopped by {why} at step {steps} of {planned}"
    return line if stopped_by == INTERRUPTED else f"{line}: the model is undertrained"  # (Ctrl-C exports none)


def seed_step(seed: int, step: int, rank: int, device: torch.device = torch.device("cpu")) -> None:
    """Seed torch (CPU and the training device), numpy and random from (seed, step, rank): a step's
    draws never depend on the past. Not torch.manual_seed, which queues a seed for every backend on
    each call (0.4 ms a step)."""
    value = (seed * 1_000_003 + step * 1_009 + rank) % 2**32
    torch.random.default_generator.manual_seed(value)
    if device.type == "cuda":
        torch.cuda.manual_seed(value)
    np.random.seed(value)
    random.seed(value)


def rescale_lr(trainer: L.Trainer, factor: float) -> None:
    """Multiply the schedule's base rate (and the current rate) by `factor`."""
    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
        for group in scheduler.optimizer.param_groups:
            group["lr"] *= factor
            if "initial_lr" in group:
                group["initial_lr"] *= factor


def print_line(line: str, trainer: L.Trainer) -> None:
    """A plain line on stderr; above Lightning's progress bar when one is drawn."""
    bar = trainer.progress_bar_callback
    if bar is not None and getattr(bar, "is_enabled", False) and hasattr(bar, "train_progress_bar"):
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)
