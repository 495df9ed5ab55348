"""Task generation's data: captioned images (any caption format), one caption per image per batch.

The pairs are retrieval's (`CaptionDataset`, `PairSampler`, `collate_pairs`): an image brings its
captions in turn from epoch to epoch. The caption tokenizer is a word tokenizer built from the
training captions (kept in the model directory, so generation reads words the way training did).
"""

from __future__ import annotations

from pathlib import Path

from ...config import Config
from ...data.caption_dataset import CaptionDataset
from ...data.formats.common import ReadResult
from ...data.loading import read_split
from ...data.subsample import sample_images
from ...data.tokenizer import build_tokenizer, load_tokenizer
from ...errors import ConfigError
from ...models.saved import TOKENIZER


def read_train_val(config: Config) -> tuple[ReadResult, ReadResult | None]:
    train = read_split(config.data, "train")
    train.samples = sample_images(train.samples, config.data.train_fraction, config.seed)
    return train, read_split(config.data, "val") if config.data.val else None


def caption_tokenizer(train: ReadResult, model_dir: Path, resume: bool):
    """The run's word tokenizer: a resumed run reloads its own, so token ids never change mid-run."""
    if resume:
        return load_tokenizer(model_dir / TOKENIZER)
    return build_tokenizer([c for s in train.samples for c in s.captions])


def caption_datasets(config: Config, tokenizer, train: ReadResult, val: ReadResult | None,
                     progress: bool) -> tuple[CaptionDataset, CaptionDataset | None]:
    args = (tokenizer, config.data.image_size, config.data.max_question_length)
    train_set = CaptionDataset(train.samples, *args, train.skipped, progress, "Loading train images")
    if len(train_set) == 0:
        raise ConfigError("task generation: no captioned training images in data.train"
                          + (f"; {train.skipped.summary()}" if train.skipped.count else ""))
    val_set = CaptionDataset(val.samples, *args, val.skipped, progress, "Loading val images") if val else None
    return train_set, val_set
