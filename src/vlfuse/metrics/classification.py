"""Classification metrics: accuracy, macro-F1, AUROC (binary, one-vs-rest), NLVR consistency.

- accuracy = #(predicted label == target) / N. Predictions are labels [N] or scores [N, C]
  (arg-max taken). Plain torch: a micro accuracy needs no class count.
- macro-F1 = mean over classes of F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c), computed by
  torchmetrics (`multiclass_f1_score`, average="macro"). A class absent from both predictions and
  targets is left out of the mean (as scikit-learn does with its default labels), so passing a
  large `num_classes` does not drag the score down with empty classes.
- per-class accuracy = #(predicted c and target c) / #(target c) for each class c: the accuracy on
  the examples of that class (its recall), None for a class with no examples. It shows what a
  single accuracy hides on unbalanced data: a model that always says "positive" scores 100% there.
- AUROC (Hanley & McNeil 1982: the probability that a random positive scores above a random
  negative, ties counting one half), by torchmetrics. Binary: scores [N] for the positive class.
  Multi-class: scores [N, C], one-vs-rest AUROC per class, unweighted mean (scikit-learn's
  multi_class="ovr", average="macro"). torchmetrics turns scores outside [0, 1] into probabilities
  (sigmoid for binary, per-row softmax for multi-class), so logits are accepted.
- NLVR consistency (Suhr et al. 2017 NLVR; 2019 NLVR2): the fraction of distinct sentences whose
  every example (image for NLVR, image pair for NLVR2) is predicted correctly.
  `vlfuse.data.matching.nlvr_sentence_id` derives the sentence from a published identifier.

All functions return Python floats.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Sequence

import torch


def _labels(predictions, target) -> tuple[torch.Tensor, torch.Tensor]:
    preds, target = torch.as_tensor(predictions), torch.as_tensor(target)
    if preds.ndim == 2:
        preds = preds.argmax(dim=1)
    if preds.ndim != 1 or target.ndim != 1 or preds.shape[0] != target.shape[0]:
        raise ValueError(f"predictions must be labels [N] or scores [N, C] matching target [N]; got "
                         f"{tuple(torch.as_tensor(predictions).shape)} and {tuple(target.shape)}")
    if preds.shape[0] == 0:
        raise ValueError("no predictions to score")
    if target.is_floating_point() or preds.is_floating_point():
        raise ValueError("labels must be integers (give scores as [N, C] to take the arg-max)")
    return preds.long(), target.long()


def accuracy(predictions, target) -> float:
    """Fraction of correct predictions; predictions are labels [N] or scores [N, C]."""
    preds, target = _labels(predictions, target)
    return (preds == target).double().mean().item()


def macro_f1(predictions, target, num_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 over the classes that occur (see the module docstring)."""
    from torchmetrics.functional.classification import multiclass_f1_score

    preds, target = _labels(predictions, target)
    if num_classes is None:
        scores = torch.as_tensor(predictions)
        num_classes = scores.shape[1] if scores.ndim == 2 else int(max(preds.max(), target.max())) + 1
    if min(preds.min(), target.min()) < 0 or max(preds.max(), target.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes})")
    return multiclass_f1_score(preds, target, num_classes=max(num_classes, 2), average="macro").item()


def per_class_accuracy(predictions, target, num_classes: int) -> list[float | None]:
    """Accuracy on each class's examples (its recall): [num_classes], None where the class has none."""
    preds, target = _labels(predictions, target)
    if min(preds.min(), target.min()) < 0 or max(preds.max(), target.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes})")
    hits = torch.bincount(target[preds == target], minlength=num_classes)
    totals = torch.bincount(target, minlength=num_classes)
    return [None if n == 0 else (h / n).item() for h, n in zip(hits.double(), totals)]


def auroc(scores, target) -> float:
    """Binary AUROC (scores [N]) or macro one-vs-rest AUROC (scores [N, C]).

    Every class needs both positives and negatives in `target`, else the ROC curve is undefined.
    """
    from torchmetrics.functional.classification import binary_auroc, multiclass_auroc

    scores, target = torch.as_tensor(scores), torch.as_tensor(target)
    if target.ndim != 1 or scores.ndim not in (1, 2) or scores.shape[0] != target.shape[0]:
        raise ValueError(f"scores must be [N] (binary) or [N, C] matching target [N]; got "
                         f"{tuple(scores.shape)} and {tuple(target.shape)}")
    if scores.shape[0] == 0:
        raise ValueError("no scores to evaluate")
    if target.is_floating_point():
        raise ValueError("target must hold integer labels")
    scores, target = scores.float(), target.long()
    num_classes = 2 if scores.ndim == 1 else scores.shape[1]
    if target.min() < 0 or target.max() >= num_classes:
        raise ValueError(f"target labels must lie in [0, {num_classes})")
    present = torch.bincount(target, minlength=num_classes)
    if (present == 0).any() or (present == len(target)).any():
        # a class with no positives (or no negatives) has no ROC curve
        raise ValueError(f"AUROC is undefined: every class needs positives and negatives; counts per class: "
                         f"{present.tolist()}")
    if scores.ndim == 1:
        return binary_auroc(scores, target).item()
    return multiclass_auroc(scores, target, num_classes=num_classes, average="macro").item()


def nlvr_consistency(predictions: Sequence, labels: Sequence, sentence_ids: Sequence[Hashable]) -> float:
    """Fraction of distinct sentence ids whose every example has prediction == label."""
    if not len(predictions) == len(labels) == len(sentence_ids):
        raise ValueError(f"lengths differ: {len(predictions)} predictions, {len(labels)} labels, "
                         f"{len(sentence_ids)} sentence ids")
    if not len(predictions):
        raise ValueError("no predictions to score")
    all_right: dict[Hashable, bool] = defaultdict(lambda: True)
    for p, y, s in zip(predictions, labels, sentence_ids):
        all_right[s] &= bool(p == y)
    return sum(all_right.values()) / len(all_right)
