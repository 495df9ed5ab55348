"""Task pretrain's data: captioned images as row-aligned pairs; the tokenizer (captions, the texts of
`pretrain.vocabulary_data`, [MASK])."""

from __future__ import annotations

from pathlib import Path

from ...config import Config
from ...data.loading import read_split
from ...data.tokenizer import build_tokenizer
from ..base import run_tokenizer


def vocabulary_texts(config: Config) -> list[str]:
    """Texts of `pretrain.vocabulary_data`'s train split: questions (or captions) fine-tuning will read."""
    data = config.pretrain.vocabulary_data
    if data is None:
        return []
    read = read_split(data, "train")
    texts = []
    for sample in read.samples:
        texts += list(getattr(sample, "captions", ())) or [sample.question]
    return texts


def pretrain_tokenizer(config: Config, captions: list[str], model_dir: Path, resume: bool):
    """A word tokenizer over the captions and pretrain.vocabulary_data's texts, with [MASK] for MLM."""
    return run_tokenizer(config, model_dir, resume, lambda: captions + vocabulary_texts(config),
                         lambda texts: build_tokenizer(texts, specials=("[MASK]",)))
