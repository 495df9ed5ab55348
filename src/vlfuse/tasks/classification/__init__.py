"""Task classification: a label per (image, text) from a JSONL/CSV table (hateful memes, MM-IMDb style);
accuracy, macro-F1, AUROC. It shares its implementation with matching: vlfuse.tasks.labelled. With
data.feature_cache the frozen encoders' outputs (image grid, text states) come from the cache, in training
and evaluation alike."""

from ..base import Task
from ..labelled.evaluate import evaluate_labelled_split
from ..labelled.module import prepare_labelled
from ..labelled.report import format_labelled_metrics

TASK = Task("classification", prepare_labelled, evaluate_labelled_split, format_labelled_metrics)
