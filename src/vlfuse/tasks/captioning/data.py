"""Task captioning's data: each image with every caption written for it, teacher-forcing targets, the
caption tokenizer, and the checks of the captioning config section."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ...config import Config
from ...data.caption_dataset import CaptionDataset
from ...data.caption_tokens import build_caption_tokenizer
from ...data.records import CaptionSample
from ...data.tokenizer import load_tokenizer, pad_ids
from ...encoders.hf_text import PretrainedTextEncoder
from ...errors import ConfigError
from ...models.saved import TOKENIZER

IGNORE_INDEX = -100


class CaptioningDataset(CaptionDataset):
    """Item i = (image i as uint8 [3, S, S], the token ids of every caption of image i)."""

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, list[list[int]]]:
        i, epoch = key if isinstance(key, tuple) else (key, None)
        captions = range(self.first_caption[i], self.first_caption[i + 1])
        return self.image_for(i, epoch, captions), self.caption_ids[captions.start: captions.stop]


def collate_captions(items: list[tuple[torch.Tensor, list[list[int]]]]) -> dict:
    """images [B, 3, S, S]; input_ids / attention_mask [C, L] for the C captions; image_index [C]."""
    captions = [ids for _, group in items for ids in group]
    input_ids, attention_mask = pad_ids(captions)
    image_index = torch.tensor([i for i, (_, group) in enumerate(items) for _ in group], dtype=torch.long)
    return {"images": torch.stack([image for image, _ in items]), "input_ids": input_ids,
            "attention_mask": attention_mask, "image_index": image_index}


def teacher_forcing_targets(input_ids: torch.Tensor, attention_mask: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(decoder input: every token but the last, targets: every token but the first, padding ignored)."""
    targets = input_ids[:, 1:].masked_fill(~attention_mask[:, 1:].bool(), IGNORE_INDEX)
    return input_ids[:, :-1], targets


def caption_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean token cross-entropy over the real target tokens; logits [B, L, V], targets [B, L]."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                           label_smoothing=label_smoothing)


def caption_tokenizer(config: Config, samples: list[CaptionSample], model_dir: Path, resume: bool):
    """Resumed: the interrupted run's. Else a word-level one from the training captions, or (captioning.
    tokenizer: pretrained) the pretrained text model's, model.text_encoder.path or all-MiniLM-L6-v2."""
    if resume:  # a resumed run must keep the exact token ids of the interrupted one
        return load_tokenizer(model_dir / TOKENIZER)
    if config.captioning.tokenizer == "pretrained":
        spec = config.model.text_encoder
        path = spec.get("path") if spec.get("name") == "pretrained" else None
        return load_tokenizer(PretrainedTextEncoder.tokenizer_file(path))
    return build_caption_tokenizer((c for s in samples for c in s.captions), config.captioning.min_word_count)


def check_captioning_config(config: Config) -> None:
    c = config.captioning
    if c.beam_size < 1:
        raise ConfigError(f"config key 'captioning.beam_size' must be >= 1, got {c.beam_size}")
    if c.max_length is not None and c.max_length < 1:
        raise ConfigError(f"config key 'captioning.max_length' must be >= 1, got {c.max_length}")
    if not 0 <= c.label_smoothing < 1:
        raise ConfigError(f"config key 'captioning.label_smoothing' must be in [0, 1), got {c.label_smoothing}")
    if c.eval_batch < 1:
        raise ConfigError(f"config key 'captioning.eval_batch' must be >= 1, got {c.eval_batch}")
    if c.min_word_count < 1:
        raise ConfigError(f"config key 'captioning.min_word_count' must be >= 1, got {c.min_word_count}")
    if c.patience is not None and (c.patience < 1 or c.select_on is None):
        raise ConfigError(f"config key 'captioning.patience' must be >= 1 and needs captioning.select_on, got "
                          f"{c.patience} (select_on: {c.select_on})")
    if not 0 <= c.scst_epochs < config.train.epochs:
        raise ConfigError(f"config key 'captioning.scst_epochs' must be in [0, train.epochs = {config.train.epochs}): "
                          f"the epochs before it train by cross-entropy, got {c.scst_epochs}")
    if c.scst_epochs and (c.scst_samples < 2 or c.scst_lr <= 0):
        raise ConfigError(f"config keys 'captioning.scst_samples' (>= 2: each sample's baseline is the others') and "
                          f"'captioning.scst_lr' (> 0), got {c.scst_samples} and {c.scst_lr}")
    if c.select_on is not None and config.data.val is None:
        raise ConfigError("config key 'captioning.select_on' needs a val split (data.val) to caption and score")
    if config.data.max_question_length < 3:
        raise ConfigError("config key 'data.max_question_length' must be >= 3 for task captioning: a caption "
                          f"holds BOS, a word and EOS, got {config.data.max_question_length}")
