"""Tasks matching and classification: their samples (statements, labelled pairs), classes and datasets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from ...config import Config
from ...data.answers import AnswerVocab, normalize_answer
from ...data.formats.common import ReadResult
from ...data.loading import CAPTION_FORMATS, READERS, read_split
from ...data.matching import LABELS, captions_to_statements, first_images, hold_out_sentences, true_false_samples
from ...data.records import VQASample
from ...data.subsample import sample_images
from ...data.vqa_dataset import GroupedVQADataset
from ...errors import ConfigError, DataError
from ...progress import track

CACHE_LIMIT_BYTES = 4 << 30  # frozen image features kept in memory up to this size; beyond, encoded every step


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
