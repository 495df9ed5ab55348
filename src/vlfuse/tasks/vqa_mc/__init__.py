"""Task vqa_mc: multiple-choice VQA. Each (question, candidate answer) pair is fused with the image
and scored by a match head; the highest-scoring candidate is the answer.

Data: Visual7W telling (format v7w), VQA multiple-choice questions files (format vqa_v2 with
`multiple_choices`), JSONL/CSV tables with a `choices` column, or any question data without
candidates (the answer plus distractors from the split's other answers; see .data).
The Python face is predict.py (`load(model_dir).choose(image, question, choices)`).
"""

from ..base import Task
from .evaluate import evaluate_vqa_mc_split
from .module import prepare_vqa_mc
from .report import format_vqa_mc_metrics

TASK = Task("vqa_mc", prepare_vqa_mc, evaluate_vqa_mc_split, format_vqa_mc_metrics)
