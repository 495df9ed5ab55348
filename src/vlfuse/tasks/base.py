"""What every task shares: the `Task` record the TASKS table holds, the LightningModule base that logs
every loss, and the one copy of the eval-JSON writer, the run and split summaries and the tokenizer rule.

A task package (vlfuse/tasks/<name>/) holds data.py (samples -> datasets and batches), module.py (its
LightningModule with `losses(batch)`, and `prepare`: model + data for the shared loop), evaluate.py
(the metrics of a split), predict.py (the Python face, where it has one) and report.py (how its
metrics print); its __init__.py defines TASK.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch import nn

from ..config import Config, TrainConfig
from ..data.tokenizer import build_tokenizer, load_tokenizer
from ..models.factory import text_tokenizer_file
from ..models.saved import TOKENIZER
from ..train.optim import configure_adamw
from ..train.run import Evaluate, Prepare


@dataclass(frozen=True)
class Task:
    """One task as the CLI, the training loop and evaluation see it."""

    name: str
    prepare: Prepare  # (config, model_dir, resume, progress) -> Prepared: model, data and summary for the loop
    evaluate_split: Evaluate  # (model_dir, config, split, out_json, progress) -> metrics, eval JSON written
    format_metrics: Callable[[dict], str]  # the metrics as the terminal shows them


class TaskModule(L.LightningModule):
    """The LightningModule of every task: a subclass says `losses(batch)` -> {"loss": ..., more} and how
    many examples a batch counts (`batch_size`); each key is logged as train_<key> / val_<key>."""

    shown = ("loss",)  # keys on the progress bar

    def __init__(self, model: nn.Module, train_config: TrainConfig, total_steps: int, seed: int = 0):
        super().__init__()
        self.model, self.cfg, self.total_steps, self.seed = model, train_config, max(1, total_steps), seed
        self.draw_step = 0  # what `generator` seeds from: the global step in training, the batch in validation

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def batch_size(self, batch: dict) -> int:
        return len(batch["input_ids"])

    def generator(self, device: torch.device | str | None = None) -> torch.Generator:
        """Random draws (masks, negatives) from (seed, step) alone: a resumed run draws what the interrupted
        one would have. On the model's device unless `device` says (draws made on the CPU)."""
        return torch.Generator(device=device or self.device).manual_seed(self.seed * 1_000_003 + self.draw_step)

    def log_losses(self, stage: str, out: dict[str, torch.Tensor], n: int) -> None:
        for name, value in out.items():
            self.log(f"{stage}_{name}", value, prog_bar=name in self.shown, batch_size=n, sync_dist=stage == "val")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.draw_step = self.global_step
        out = self.losses(batch)
        self.log_losses("train", out, self.batch_size(batch))
        return out["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.draw_step = batch_idx
        self.log_losses("val", self.losses(batch), self.batch_size(batch))

    def configure_optimizers(self):
        return configure_adamw(self.model, self.cfg, self.total_steps)


def write_eval_json(out_json: Path | None, metrics: dict, records: list[dict] | None = None,
                    records_name: str = "predictions") -> dict:
    """metrics to `out_json`, and one JSON line per record beside it (<stem>_<records_name>.jsonl)."""
    if out_json is not None:
        out_json.write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
        if records is not None:
            out_json.with_name(f"{out_json.stem}_{records_name}.jsonl").write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return metrics


def split_summary(read, **counts) -> dict:
    """A split's part of run.json: the task's counts, then what reading skipped."""
    return {**counts, "skipped": read.skipped.as_dict()}


def captioned_split(dataset, read) -> dict:
    """split_summary of a split of captioned images (retrieval, captioning)."""
    return split_summary(read, images=len(dataset), captions=len(dataset.captions), uncaptioned=dataset.uncaptioned)


def run_summary(task: str, model: nn.Module, tokenizer, train: dict, val: dict | None, **extra) -> dict:
    """The task's part of run.json: its splits, vocabulary and parameter counts (`extra` after the splits)."""
    return {"task": task, "train": train, "val": val, **extra, "vocab": tokenizer.get_vocab_size(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}


_SHARED_TOKENIZER: ContextVar = ContextVar("shared_tokenizer", default=None)


@contextmanager
def shared_tokenizer(tokenizer) -> Iterator[None]:
    """Within it, `run_tokenizer` gives `tokenizer` to every new run (task multitask: the members that share
    one text encoder must read one vocabulary)."""
    token = _SHARED_TOKENIZER.set(tokenizer)
    try:
        yield
    finally:
        _SHARED_TOKENIZER.reset(token)


def run_tokenizer(config: Config, model_dir: Path, resume: bool, texts: Callable[[], Iterable[str]],
                  build: Callable = build_tokenizer):
    """The run's tokenizer: a resumed run's own (the exact token ids of the interrupted one), the one
    `shared_tokenizer` holds, a pretrained text encoder's (its own vocabulary), or `build(texts())` from
    the training texts."""
    if resume:
        return load_tokenizer(model_dir / TOKENIZER)
    if (shared := _SHARED_TOKENIZER.get()) is not None:
        return shared
    pretrained = text_tokenizer_file(config)
    return load_tokenizer(pretrained) if pretrained else build(texts())


def skipped_line(metrics: dict) -> str | None:
    """'skipped N bad samples: why; why' when evaluation skipped any."""
    skipped = metrics.get("skipped") or {}
    if not skipped.get("count"):
        return None
    return f"skipped {skipped['count']} bad samples: " + "; ".join(skipped["reasons"])


def render(table) -> str:
    """A rich table as the text this terminal shows it (its width; styled only where stdout is a terminal)."""
    from rich.console import Console

    out, terminal = io.StringIO(), Console()
    Console(file=out, width=terminal.width, force_terminal=terminal.is_terminal,
            color_system=terminal.color_system).print(table)
    return out.getvalue().rstrip("\n")


def evaluated_count(metrics: dict) -> int | None:
    """How many samples a task's metrics are over (questions, statements, images, dialogues)."""
    overall = metrics.get("overall")
    if isinstance(overall, dict) and "count" in overall:
        return overall["count"]
    return next((metrics[k] for k in ("count", "questions", "images", "dialogues", "examples")
                 if isinstance(metrics.get(k), int)), None)
