"""Task dialogue's data: dialogues grouped by image, every round with its candidate answers; the
vocabularies a run builds."""

from __future__ import annotations

from pathlib import Path

import torch

from ...config import Config
from ...data.answers import AnswerVocab
from ...data.caption_tokens import build_caption_tokenizer
from ...data.dialog_dataset import DialogDataset, dialogue_texts
from ...data.formats.common import SkipLog
from ...data.records import DialogSample
from ...data.tokenizer import build_tokenizer
from ...errors import ConfigError
from ...models.dialogue import DialogueModel
from ...models.saved import ANSWERS
from ..base import run_tokenizer

MODEL_INPUTS = ("images", "question_ids", "question_mask", "history_ids", "history_mask", "image_index",
                "answer_ids", "answer_mask", "options")


def score_batch(model: DialogueModel, batch: dict) -> torch.Tensor:
    return model(*(batch[k] for k in MODEL_INPUTS))


def make_dataset(samples: list[DialogSample], tokenizer, config: Config, skip_log: SkipLog, progress: bool,
                 description: str) -> DialogDataset:
    d = config.dialogue
    return DialogDataset(samples, tokenizer, config.data.image_size, config.data.max_question_length,
                         d.max_history_length, d.max_answer_length, skip_log, progress, description)


def vocabularies(config: Config, samples: list[DialogSample], model_dir: Path, resume: bool):
    """(tokenizer, the training answers): what predict ranks when given no candidates."""
    generative = config.dialogue.decoder == "generative"  # answers are written between [BOS] and [EOS]
    tokenizer = run_tokenizer(config, model_dir, resume, lambda: dialogue_texts(samples),
                              build_caption_tokenizer if generative else build_tokenizer)
    if resume:  # a resumed run keeps the interrupted one's answers
        return tokenizer, AnswerVocab.load(model_dir / ANSWERS)
    answers = list(dict.fromkeys(r.answer for s in samples for r in s.rounds if r.answer is not None))
    if not answers:
        raise ConfigError("task dialogue: the training dialogues have no answers to learn from")
    return tokenizer, AnswerVocab(answers)
