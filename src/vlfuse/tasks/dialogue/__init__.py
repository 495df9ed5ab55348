"""Task dialogue: visual dialogue (VisDial, Das et al. 2017), discriminative or generative.

Training: discriminative, every round of a batch of dialogues scores its candidate answers and the
loss is the cross-entropy of the ground-truth candidate; generative, the decoder learns to write
the ground-truth answer (token cross-entropy, teacher forcing). Rounds without a ground truth (as in
VisDial's test split) are left out. Evaluation (both decoders: generative scores are
log-likelihoods) ranks each round's candidates by score and reports MRR, R@1/5/10 and mean
rank (`vlfuse.metrics.ranking`), overall and per question family where the data names one (the
built-in dialogues do: `family` on each round).
"""

from ..base import Task
from .evaluate import evaluate_dialogue_split
from .module import prepare_dialogue
from .report import format_dialogue_metrics

TASK = Task("dialogue", prepare_dialogue, evaluate_dialogue_split, format_dialogue_metrics)
