"""Word-level tokenizer built from the training questions (Hugging Face `tokenizers`).

BERT's normaliser and pre-tokeniser split punctuation and put every CJK character in a token of
its own, so the same tokenizer serves English and Chinese questions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

PAD, UNK = "[PAD]", "[UNK]"


def build_tokenizer(texts: Iterable[str], min_frequency: int = 1):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(special_tokens=[PAD, UNK], min_frequency=min_frequency, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def load_tokenizer(path: str | Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def encode_ids(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to max_length (never empty: an all-unknown text keeps [UNK])."""
    unk = tokenizer.token_to_id(UNK)
    return [enc.ids[:max_length] or [unk] for enc in tokenizer.encode_batch(texts)]


def pad_ids(ids: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence: (input_ids [B, L] long, attention_mask [B, L] bool)."""
    length = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), length), pad_id, dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
    mask = torch.arange(length)[None, :] < torch.tensor([len(x) for x in ids])[:, None]
    return input_ids, mask
