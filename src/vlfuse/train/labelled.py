"""Tasks matching and classification: image + text -> one of C classes, a head on the fused representation.

matching: is the statement true of the image (NLVR style)? Classes false/true, labels from the
statement formats or made from captions with hard negatives (vlfuse.data.matching). Metrics:
accuracy, macro-F1, AUROC of "true", and consistency (every image of a sentence right).

classification: a label per (image, text) from a JSONL/CSV table (`image`, `text`, `label`:
hateful memes, MM-IMDb style). Classes are the training labels, sorted. Metrics: accuracy,
macro-F1, AUROC (binary, or one-vs-rest macro).

Both ride on the VQA machinery: statements grouped by image (each image encoded once for all of
its statements), the classifier head, cross-entropy. A frozen pretrained image encoder's backbone
runs once per training image (its output kept in memory), not once per epoch.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from functools import partial
from pathlib import Path

import torch

from ..config import Config, TrainConfig
from ..data.answers import AnswerVocab, normalize_answer
from ..data.feature_cache import feature_collate, feature_loader
from ..data.formats.common import ReadResult, SkipLog
from ..data.loading import CAPTION_FORMATS, READERS, read_split
from ..data.matching import LABELS, captions_to_statements, first_images, hold_out_sentences, sentence_id, \
    true_false_samples
from ..data.records import VQASample
from ..data.subsample import sample_images
from ..data.tokenizer import build_tokenizer, load_tokenizer
from ..data.vqa_dataset import GroupedVQADataset, collate_groups
from ..errors import ConfigError, DataError
from ..metrics.classification import accuracy, auroc, macro_f1, nlvr_consistency, per_class_accuracy
from ..models.factory import build_model, text_tokenizer_file
from ..models.saved import ANSWERS, TOKENIZER, SavedModel, save_model_dir, save_vocabularies
from ..progress import track
from .module import VQAModule
from .run import EpochDataModule, Prepared, steps_per_epoch, warn_skipped

CACHE_LIMIT_BYTES = 4 << 30  # frozen image features kept in memory up to this size; beyond, encoded every step
POSITIVE_NAMES = ("true", "1", "yes", "positive")  # the class whose score a binary AUROC ranks by


# --------------------------------------------------------------------------- data

def split_source(config: Config, split: str) -> Path:
    """The file a split's records come from, for error messages."""
    spec = getattr(config.data, split)
    key = READERS[config.data.format][2][0]
    return Path(config.data.root).expanduser() / str(getattr(spec, key))


def read_labelled(config: Config, split: str) -> ReadResult:
    """One split's samples for the task, labels checked; matching's negatives made and splits applied."""
    read = read_split(config.data, split)
    samples, source, m = read.samples, split_source(config, split), config.matching
    if config.task == "matching":
        if config.data.format in CAPTION_FORMATS:
            samples = captions_to_statements(samples, m, config.seed)
        else:
            samples = true_false_samples(samples, source)
        if m.max_images_per_statement is not None:
            samples = first_images(samples, m.max_images_per_statement)
        if m.holdout_sentences:
            if not 0 < m.holdout_sentences < 1:
                raise ConfigError(f"config key 'matching.holdout_sentences' must lie in (0, 1), got "
                                  f"{m.holdout_sentences}")
            samples = hold_out_sentences(samples, config.data.format, m.holdout_sentences, m.holdout_seed,
                                         held_out=split != "train")
    if split == "train":
        samples = sample_images(samples, config.data.train_fraction, config.seed)
    return ReadResult(samples=samples, skipped=read.skipped)


def build_labels(config: Config, samples: list[VQASample], source: Path) -> AnswerVocab:
    """matching: false/true. classification: every training label, sorted (so "0", "1" are classes 0, 1)."""
    if config.task == "matching":
        return AnswerVocab(list(LABELS))
    unlabelled = [s for s in samples if s.answer is None]
    if unlabelled:
        raise DataError(f"missing label: {len(unlabelled)} training records have none (first: question_id "
                        f"{unlabelled[0].question_id!r}); task classification needs a label on every one",
                        path=source, field="label")
    labels = sorted({normalize_answer(s.answer) for s in samples})
    if len(labels) < 2:
        raise DataError(f"task classification needs at least 2 classes, the training labels are {labels}",
                        path=source, field="label")
    return AnswerVocab(labels)


def check_known_labels(samples: list[VQASample], labels: AnswerVocab, source: Path) -> None:
    """A label the model has no class for is an error (a typo, or another dataset), not a silent miss."""
    unknown = Counter(s.answer for s in samples if s.answer is not None and labels.index(s.answer) is None)
    if unknown:
        label, count = unknown.most_common(1)[0]
        raise DataError(f"unknown label {label!r} ({count} records; {len(unknown)} unknown labels in all): the "
                        f"model's classes are {', '.join(labels.answers)}", path=source, field="label")


def _tokenizer(config: Config, samples: list[VQASample], model_dir: Path, resume: bool):
    if resume:  # a resumed run must keep the exact token ids of the interrupted one
        return load_tokenizer(model_dir / TOKENIZER)
    pretrained = text_tokenizer_file(config)
    return load_tokenizer(pretrained) if pretrained else build_tokenizer(s.question for s in samples)


@torch.no_grad()
def cache_frozen_images(encoder: torch.nn.Module, dataset: GroupedVQADataset, progress: bool,
                        batch: int = 32) -> bool:
    """Swap the dataset's images for the frozen backbone's output (float16), computed once.

    Only for an encoder that says it is frozen and splits its forward (`frozen_features` then
    `from_frozen`); False (nothing changed) otherwise, or when the features would pass
    CACHE_LIMIT_BYTES.
    """
    if not (getattr(encoder, "frozen", False) and hasattr(encoder, "frozen_features")) or len(dataset) == 0:
        return False
    first = encoder.frozen_features(dataset.images[:1].float() / 255)
    if first.numel() * 2 * len(dataset) > CACHE_LIMIT_BYTES:
        return False
    parts = []
    starts = range(0, len(dataset), batch)
    for start in track(starts, "Encoding images (frozen)", total=len(starts), enabled=progress):
        parts.append(encoder.frozen_features(dataset.images[start: start + batch].float() / 255).half())
    dataset.images = torch.cat(parts)
    return True


class LabelledModule(VQAModule):
    """VQAModule (cross-entropy over the classes) that can read frozen image features from the batch."""

    def __init__(self, model, train_config: TrainConfig, total_steps: int, cached_images: bool = False):
        super().__init__(model, train_config, total_steps)
        self.cached_images = cached_images

    def _step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, int]:
        if not self.cached_images:  # images, or data.feature_cache's features (batch["image_features"])
            return super()._step(batch)
        image = self.model.image_encoder.from_frozen(batch["images"].float())
        logits, _ = self.model.from_image_features(image, batch["input_ids"], batch["attention_mask"],
                                                   batch["image_index"])
        labels = batch["labels"]
        return self.loss(logits, batch), (logits.argmax(-1) == labels).sum(), labels.numel()


def _split_summary(dataset: GroupedVQADataset, skipped: SkipLog) -> dict:
    return {"images": len(dataset), "examples": dataset.num_questions,
            "labels": dict(Counter(s.answer for g in dataset.groups for s in g.samples).most_common()),
            "skipped": skipped.as_dict()}


def prepare_labelled(config: Config, model_dir: Path, resume: bool, progress: bool) -> Prepared:
    """Tasks matching and classification: examples grouped by image, labels as classes."""
    train_read = read_labelled(config, "train")
    val_read = read_labelled(config, "val") if config.data.val else None
    source = split_source(config, "train")
    labels = AnswerVocab.load(model_dir / ANSWERS) if resume else build_labels(config, train_read.samples, source)
    check_known_labels(train_read.samples, labels, source)
    if val_read is not None:
        check_known_labels(val_read.samples, labels, split_source(config, "val"))
    tokenizer = _tokenizer(config, train_read.samples, model_dir, resume)
    save_vocabularies(model_dir, config, tokenizer, labels)
    model = build_model(config, tokenizer.get_vocab_size(), len(labels))
    # data.feature_cache: the items carry the frozen image encoder's features, read from disk
    loader = feature_loader(config, model.image_encoder, train_read.samples + (val_read.samples if val_read else []),
                            progress)
    args = (tokenizer, labels, config.data.image_size, config.data.max_question_length)
    train_set = GroupedVQADataset(train_read.samples, *args, train_read.skipped, progress, "Loading train images",
                                  image_loader=loader)
    if len(train_set) == 0:
        raise ConfigError("no usable training samples" + (f": {train_read.skipped.summary()}"
                                                          if train_read.skipped.count else f" in {source}"))
    val_set = (GroupedVQADataset(val_read.samples, *args, val_read.skipped, progress, "Loading val images",
                                 image_loader=loader) if val_read else None)
    warn_skipped(train=train_read, val=val_read)

    cached = loader is None and cache_frozen_images(model.image_encoder, train_set, progress)
    if cached and val_set is not None:
        cached = cache_frozen_images(model.image_encoder, val_set, progress)
        if not cached:
            raise ConfigError("the validation images' frozen features do not fit in memory beside the training "
                              "ones: set data.val=null")
    module = LabelledModule(model, config.train, steps_per_epoch(config, len(train_set)) * config.train.epochs,
                            cached)
    summary = {
        "task": config.task, "classes": labels.answers,
        "train": _split_summary(train_set, train_read.skipped),
        "val": None if val_set is None else _split_summary(val_set, val_read.skipped),
        "vocab": tokenizer.get_vocab_size(),
        "frozen_image_features_cached": "data.feature_cache" if loader is not None else cached,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    collate = feature_collate(config, partial(collate_groups, with_samples=False))
    return Prepared(module, EpochDataModule(train_set, val_set, config, collate),
                    lambda: save_model_dir(model_dir, model.cpu(), config, tokenizer, labels), summary)


# --------------------------------------------------------------------------- evaluation

@torch.no_grad()
def class_probabilities(saved: SavedModel, dataset: GroupedVQADataset, batch_images: int = 32,
                        progress: bool = True) -> tuple[torch.Tensor, list[VQASample]]:
    """Softmax over the classes for every example of `dataset` ([N, C]), and the examples in that order."""
    model = saved.model.eval()
    device = next(model.parameters()).device
    probs, samples = [], []
    starts = range(0, len(dataset), batch_images)
    for start in track(starts, "Evaluating", total=len(starts), enabled=progress):
        batch = collate_groups([dataset[i] for i in range(start, min(start + batch_images, len(dataset)))])
        logits, _ = model(batch["images"].to(device), batch["input_ids"].to(device),
                          batch["attention_mask"].to(device), batch["image_index"].to(device))
        probs.append(logits.float().softmax(-1).cpu())
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
                      progress: bool = True) -> tuple[dict, list[dict]]:
    """(metrics, one record per example) of a matching or classification model on labelled `samples`."""
    config, labels = saved.config, saved.answers
    samples = [s for s in samples if s.answer is not None]
    check_known_labels(samples, labels, Path(source))
    cfg = config.data
    dataset = GroupedVQADataset(samples, saved.tokenizer, labels, cfg.image_size, cfg.max_question_length, skip_log,
                                progress=progress)
    if dataset.num_questions == 0:
        raise DataError("no labelled examples to evaluate" + (f" ({skip_log.summary()})" if skip_log.count else ""),
                        path=source)
    clock = time.perf_counter()
    probs, ordered = class_probabilities(saved, dataset, progress=progress)
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
    from ..models.saved import load_model_dir

    saved = load_model_dir(model_dir, task=config.task)
    read = read_labelled(config, split)
    metrics, records = evaluate_labelled(saved, read.samples, read.skipped, split_source(config, split), progress)
    if out_json is not None:
        out_json.write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
        out_json.with_name(out_json.stem + "_predictions.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return metrics


def format_labelled_metrics(metrics: dict) -> str:
    """The metrics as a few lines for the terminal."""
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.2f}%"

    base = metrics["majority_baseline"]
    lines = [f"{metrics['task']}: {metrics['examples']} examples, classes {', '.join(metrics['classes'])}",
             f"  accuracy   {pct(metrics['accuracy'])}   (majority class '{base['class']}': {pct(base['accuracy'])})",
             f"  macro-F1   {pct(metrics['macro_f1'])}",
             *(f"  class {c!r:12} {pct(m['accuracy'])} of {m['count']}"
               for c, m in metrics.get("per_class", {}).items()),
             f"  AUROC      {pct(metrics['auroc'])}" + (f"  ({metrics['auroc_undefined']})"
                                                         if metrics.get("auroc_undefined") else "")]
    if "consistency" in metrics:
        lines.append(f"  consistency {pct(metrics['consistency'])} of {metrics['sentences']} sentences   "
                     f"(majority class: {pct(base['consistency'])})")
    if len(metrics.get("families", {})) > 1:
        lines += [f"  {kind:12} {pct(m['accuracy'])} of {m['count']}" for kind, m in metrics["families"].items()]
    if metrics.get("skipped", {}).get("count"):
        lines.append(f"skipped {metrics['skipped']['count']} bad samples: " + "; ".join(metrics["skipped"]["reasons"]))
    return "\n".join(lines)
