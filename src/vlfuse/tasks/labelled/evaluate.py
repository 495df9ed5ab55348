"""Tasks matching and classification: accuracy, macro-F1, AUROC (+ NLVR consistency) of a split."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ...config import Config
from ...data.formats.common import SkipLog
from ...data.matching import sentence_id
from ...data.records import VQASample
from ...data.vqa_dataset import collate_groups
from ...errors import DataError
from ...metrics.classification import accuracy, auroc, macro_f1, nlvr_consistency, per_class_accuracy
from ...models.saved import SavedModel, load_model_dir
from ..base import write_eval_json
from ..vqa.evaluate import evaluation_batches, evaluation_dataset
from ..vqa.module import answer_logits
from .data import check_known_labels, read_labelled, split_source

POSITIVE_NAMES = ("true", "1", "yes", "positive")  # the class whose score a binary AUROC ranks by


@torch.no_grad()
def class_probabilities(saved: SavedModel, dataset: Dataset, batch_images: int = 32, progress: bool = True,
                        collate=collate_groups) -> tuple[torch.Tensor, list[VQASample]]:
    """Softmax over the classes for every example of `dataset` ([N, C]), and the examples in that order."""
    model = saved.model.eval()
    device = next(model.parameters()).device
    probs, samples = [], []
    for batch in evaluation_batches(dataset, batch_images, collate, device, progress):
        probs.append(answer_logits(model, batch).float().softmax(-1).cpu())
        samples += batch["samples"]
    return (torch.cat(probs) if probs else torch.empty(0, len(saved.answers))), samples


def positive_class(classes: list[str]) -> int:
    """The class a binary AUROC ranks by: "true", "1", "yes" or "positive" when present, else the second."""
    return next((i for i, c in enumerate(classes) if c in POSITIVE_NAMES), 1)


def _auroc(probs: torch.Tensor, target: torch.Tensor, classes: list[str]) -> tuple[float | None, str | None]:
    scores = probs[:, positive_class(classes)] if len(classes) == 2 else probs
    try:
        return auroc(scores, target), None
    except ValueError as exc:  # a class absent from this split: the ROC curve is undefined
        return None, str(exc)


def labelled_metrics(probs: torch.Tensor, target: torch.Tensor, classes: list[str],
                     sentence_ids: list[str] | None = None) -> dict:
    """Accuracy, macro-F1, AUROC (+ consistency over `sentence_ids`) and the majority-class baseline."""
    preds = probs.argmax(1)
    majority, majority_count = Counter(target.tolist()).most_common(1)[0]
    score, note = _auroc(probs, target, classes)
    out = {"examples": len(target), "accuracy": accuracy(preds, target),
           "macro_f1": macro_f1(preds, target, len(classes)), "auroc": score,
           "per_class": {c: {"accuracy": a, "count": n} for c, a, n in zip(
               classes, per_class_accuracy(preds, target, len(classes)),
               torch.bincount(target, minlength=len(classes)).tolist())},
           "majority_baseline": {"class": classes[majority], "accuracy": majority_count / len(target)}}
    if note:
        out["auroc_undefined"] = note
    if sentence_ids is not None:
        out["consistency"] = nlvr_consistency(preds.tolist(), target.tolist(), sentence_ids)
        out["sentences"] = len(set(sentence_ids))
        out["majority_baseline"]["consistency"] = nlvr_consistency([majority] * len(target), target.tolist(),
                                                                   sentence_ids)
    return out


def evaluate_labelled(saved: SavedModel, samples: list[VQASample], skip_log: SkipLog, source: Path | str,
                      progress: bool = True, cache_config: Config | None = None) -> tuple[dict, list[dict]]:
    """(metrics, one record per example) of a matching or classification model on labelled `samples`;
    cache_config: a config whose data.feature_cache serves the frozen encoders' outputs."""
    config, labels = saved.config, saved.answers
    samples = [s for s in samples if s.answer is not None]
    check_known_labels(samples, labels, Path(source))
    cfg = config.data
    dataset, items, collate = evaluation_dataset(saved, samples, skip_log, collate_groups, progress, cache_config)
    if dataset.num_questions == 0:
        raise DataError("no labelled examples to evaluate" + (f" ({skip_log.summary()})" if skip_log.count else ""),
                        path=source)
    clock = time.perf_counter()
    probs, ordered = class_probabilities(saved, items, progress=progress, collate=collate)
    seconds = time.perf_counter() - clock
    target = torch.tensor([labels.index(s.answer) for s in ordered])
    matching = config.task == "matching"
    sentences = [sentence_id(s, cfg.format) for s in ordered] if matching else None
    metrics = {"task": config.task, "classes": labels.answers,
               **labelled_metrics(probs, target, labels.answers, sentences)}
    preds = probs.argmax(1).tolist()
    kinds: dict[str, list[bool]] = {}
    for s, p, y in zip(ordered, preds, target.tolist()):
        kinds.setdefault(s.question_type, []).append(p == y)
    metrics["overall"] = {"accuracy": metrics["accuracy"], "count": len(ordered)}
    metrics["families"] = {k: {"accuracy": sum(v) / len(v), "count": len(v)} for k, v in sorted(kinds.items())}
    metrics["groups"] = {}  # the VQA keys too, so `vlfuse compare` ranks fusions on these tasks
    metrics["ms_per_question"] = 1000 * seconds / len(ordered)
    metrics["skipped"] = skip_log.as_dict()
    records = [{"question_id": s.question_id, "image": str(s.image_path), "text": s.question, "truth": s.answer,
                "prediction": labels[p], "probabilities": dict(zip(labels.answers, [round(x, 6) for x in row])),
                "correct": labels[p] == s.answer, "kind": s.question_type,
                **({"sentence_id": sid} if matching else {})}
               for s, p, row, sid in zip(ordered, preds, probs.tolist(), sentences or [None] * len(ordered))]
    return metrics, records


def evaluate_labelled_split(model_dir: Path, config: Config, split: str, out_json: Path | None,
                            progress: bool = True) -> dict:
    """Evaluate the model in `model_dir` on one split of `config.data`; write metrics (+ predictions) as JSON."""
    saved = load_model_dir(model_dir, task=config.task)
    read = read_labelled(config, split)
    metrics, records = evaluate_labelled(saved, read.samples, read.skipped, split_source(config, split), progress,
                                         cache_config=config)
    return write_eval_json(out_json, metrics, records)
