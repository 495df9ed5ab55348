"""Caption vocabularies: which ids start and end a caption, and ids back to text.

A word-level tokenizer built from the training captions gets [BOS] and [EOS] and a template that
adds them to every encoded caption; a pretrained (BERT-family) tokenizer already wraps each text
in [CLS] ... [SEP], which then serve as BOS and EOS. Either way `encode_ids` returns BOS w1 ... wn
EOS and truncation keeps the EOS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from ..errors import DataError
from .tokenizer import PAD, UNK, build_tokenizer

BOS, EOS = "[BOS]", "[EOS]"
_SPACE_BEFORE_PUNCTUATION = re.compile(r" ([.,!?;:%)\]}'])")


def build_caption_tokenizer(captions: Iterable[str], min_frequency: int = 1):
    """Word-level tokenizer over `captions` (tokenizer.build_tokenizer) that wraps each in [BOS] ... [EOS]."""
    from tokenizers.processors import TemplateProcessing

    tokenizer = build_tokenizer(captions, min_frequency)
    tokenizer.add_special_tokens([BOS, EOS])
    tokenizer.post_processor = TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, tokenizer.token_to_id(BOS)), (EOS, tokenizer.token_to_id(EOS))])
    return tokenizer


@dataclass(frozen=True)
class CaptionSpecials:
    """The ids decoding needs: the start and end tokens, and those never to generate."""

    bos: int
    eos: int
    blocked: tuple[int, ...]  # padding, BOS, unknown: never a word of a caption

    @classmethod
    def of(cls, tokenizer) -> "CaptionSpecials":
        for start, end, pad, unk in ((BOS, EOS, PAD, UNK), ("[CLS]", "[SEP]", "[PAD]", "[UNK]")):
            bos, eos = tokenizer.token_to_id(start), tokenizer.token_to_id(end)
            if bos is not None and eos is not None:
                blocked = {bos} | {i for i in (tokenizer.token_to_id(pad), tokenizer.token_to_id(unk)) if i is not None}
                return cls(bos, eos, tuple(sorted(blocked)))
        raise DataError(f"the tokenizer has neither {BOS}/{EOS} nor [CLS]/[SEP] tokens to start and end captions",
                        field="tokenizer.json")


def decode_caption(tokenizer, ids: list[int]) -> str:
    """Token ids (no BOS / EOS) -> text, without the space the word tokenizer puts before punctuation."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text).strip()
