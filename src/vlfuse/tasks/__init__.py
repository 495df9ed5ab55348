"""Every task, by name, and the entry points that pick one: `train(config)`, `evaluate_split(...)`, and
`saved_task(model_dir)`, the one answer to "what task is this model directory?".

    from vlfuse.tasks import train
    result = train(load_config("configs/fusions/gated.yaml"))   # result.model_dir, result.test_metrics

To add a task: a package beside these (see tasks/base.py for its shape) and one line in TASKS.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config, load_config
from ..data.loading import check_task_format
from ..errors import DataError
from ..models.saved import CONFIG
from ..train.run import EmptySplitError, TrainResult, run_task
from . import captioning, classification, dialogue, generation, matching, multitask, pretrain, retrieval, vqa, vqa_mc
from .base import Task, evaluated_count

TASKS: dict[str, Task] = {
    "vqa": vqa.TASK,
    "vqa_mc": vqa_mc.TASK,
    "retrieval": retrieval.TASK,
    "captioning": captioning.TASK,
    "matching": matching.TASK,
    "classification": classification.TASK,
    "dialogue": dialogue.TASK,
    "pretrain": pretrain.TASK,
    "generation": generation.TASK,
}


def saved_task(model_dir: str | Path) -> str:
    """The task a saved model directory was trained for, read from its config.yaml (nothing built)."""
    path = Path(model_dir) / CONFIG
    if not path.is_file():
        raise DataError(f"not a vlfuse model directory: {CONFIG} is missing", path=model_dir)
    return load_config(path).task


def train(config: Config, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train the model of `config.task`, export it to OUT_DIR/model and evaluate it (see train.run.run_task)."""
    task = TASKS[config.task]
    return run_task(config, task.prepare, evaluate_split, resume=resume, progress=progress)


def evaluate_split(model_dir: Path, config: Config, split: str, out_json: Path | None, progress: bool = True) -> dict:
    """Evaluate a saved model on one split of `config.data`; write metrics (+ predictions) as JSON.
    An empty split is an EmptySplitError, never an accuracy over 0 samples."""
    check_task_format(config.task, config.data)
    metrics = TASKS[config.task].evaluate_split(model_dir, config, split, out_json, progress)
    if evaluated_count(metrics) == 0:
        if out_json is not None:  # no file may show a score over nothing
            out_json.unlink(missing_ok=True)
            out_json.with_name(out_json.stem + "_predictions.jsonl").unlink(missing_ok=True)
        skipped = (metrics.get("skipped") or {}).get("count")
        raise EmptySplitError(f"the {split} split (data.{split} under {config.data.root}) has no usable samples "
                              "to evaluate" + (f" ({skipped} skipped as bad)" if skipped else ""))
    return metrics


# Multi-task training runs the single tasks above as its members: it is handed this table (and the
# evaluation with its empty-split check) rather than importing the package that lists it.
TASKS["multitask"] = multitask.multitask_task(dict(TASKS), evaluate_split)
