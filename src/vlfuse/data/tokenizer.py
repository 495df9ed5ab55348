"""Tokenizers (Hugging Face `tokenizers`): a word-level one built from the training questions, or
the tokenizer.json a pretrained text encoder brings (see models.factory.text_tokenizer_file).

BERT's normaliser and pre-tokeniser split punctuation and put every CJK character in a token of
its own, so the same tokenizer serves English and Chinese questions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

PAD, UNK = "[PAD]", "[UNK]"


def build_tokenizer(texts: Iterable[str], min_frequency: int = 1, specials: tuple[str, ...] = ()):
    """Word-level tokenizer over `texts`; ids 0, 1 are [PAD], [UNK], then `specials` (e.g. [MASK])."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(special_tokens=[PAD, UNK, *specials], min_frequency=min_frequency,
                                        show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def load_tokenizer(path: str | Path):
    """A saved tokenizer.json: ours, or a pretrained model's (whose [CLS]/[SEP] it adds itself)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    # Pretrained files often pad to a fixed length and truncate; encode_ids and pad_ids do both per batch.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def encode_ids(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to max_length (never empty: an all-unknown text keeps [UNK]).

    Truncation keeps the special tokens a pretrained tokenizer appends ([SEP]): a long question
    loses words from its end, never its closing token.
    """
    unk = tokenizer.token_to_id(UNK)
    result = []
    for enc in tokenizer.encode_batch(texts):
        ids = enc.ids
        if len(ids) > max_length:
            specials = enc.special_tokens_mask
            tail = next((i for i, s in enumerate(reversed(specials)) if not s), len(specials))
            tail = min(tail, max_length - 1)
            ids = ids[: max_length - tail] + ids[len(ids) - tail:]
        result.append(ids or [unk])
    return result


def pad_ids(ids: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence: (input_ids [B, L] long, attention_mask [B, L] bool)."""
    length = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), length), pad_id, dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
    mask = torch.arange(length)[None, :] < torch.tensor([len(x) for x in ids])[:, None]
    return input_ids, mask
