"""Task vqa: answer a question about an image, answers as classes (VQA v2, GQA, the built-in shapes).

With data.feature_cache the frozen encoders' outputs (the image grid, and a frozen pretrained text
encoder's states of each question) come from the cache, in training and evaluation alike.
The Python face of a trained model is predict.py (`vlfuse.load(model_dir).predict(image, question)`),
which export and explain build on too."""

from ..base import Task
from .evaluate import evaluate_vqa_split
from .module import prepare_vqa
from .report import format_vqa_metrics

TASK = Task("vqa", prepare_vqa, evaluate_vqa_split, format_vqa_metrics)
