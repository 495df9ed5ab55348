"""Task vqa_mc: multiple-choice VQA. Each (question, candidate answer) pair is fused with the image
and scored by a match head; the highest-scoring candidate is the answer.

Data: Visual7W telling (format v7w), VQA multiple-choice questions files (format vqa_v2 with
`multiple_choices`), JSONL/CSV tables with a `choices` column, or any question data without
candidates (the answer plus distractors from the split's other answers; see .data).
"""

from __future__ import annotations

from .report import format_metrics


def prepare(config, model_dir, resume: bool, progress: bool):
    """The model, data and save step of a training run (vlfuse.train.run.Prepared)."""
    from .module import prepare as prepare_mc

    return prepare_mc(config, model_dir, resume, progress)


def evaluate_split(model_dir, config, split: str, out_json, progress: bool = True) -> dict:
    """Metrics of the model in `model_dir` on one split of `config.data`, written to `out_json`."""
    from .evaluate import evaluate_split as evaluate

    return evaluate(model_dir, config, split, out_json, progress)


def load(model_dir, device: str = "cpu"):
    """A Chooser: `.choose(image, question, choices)` picks the best candidate."""
    from .predict import load as load_chooser

    return load_chooser(model_dir, device)


__all__ = ["prepare", "evaluate_split", "format_metrics", "load"]
