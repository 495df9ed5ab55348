"""Task matching: is the statement true of the image (NLVR style)? Classes false/true; accuracy, macro-F1,
AUROC and consistency. It shares its implementation with classification: vlfuse.tasks.labelled."""

from ..base import Task
from ..labelled.evaluate import evaluate_labelled_split
from ..labelled.module import prepare_labelled
from ..labelled.report import format_labelled_metrics

TASK = Task("matching", prepare_labelled, evaluate_labelled_split, format_labelled_metrics)
