"""Tokenizers (Hugging Face `tokenizers`): a word-level one built from the training questions, or
the tokenizer.json a pretrained text encoder brings (see models.factory.text_tokenizer_file).

BERT's normaliser and pre-tokeniser split punctuation and put every CJK character in a token of
its own, so the same tokenizer serves English and Chinese questions.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import torch

from vlfuse.errors import DataError

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


def save_tokenizer(tokenizer, path: str | Path) -> Path:
    """Write tokenizer.json and, beside it, its sha256 (`sha256sum -c` reads it), which
    load_tokenizer checks: weights must never be paired with another tokenizer's ids."""
    path = Path(path)
    tokenizer.save(str(path))
    _digest_file(path).write_text(f"{_sha256(path.read_bytes())}  {path.name}\n", encoding="utf-8")
    return path


def load_tokenizer(path: str | Path):
    """A saved tokenizer.json: ours, or a pretrained model's (whose [CLS]/[SEP] it adds itself).

    DataError naming the file if it is missing, not a tokenizer, or not the one saved with it
    (the sha256 save_tokenizer wrote beside it, where there is one).
    """
    from tokenizers import Tokenizer

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("tokenizer file not found", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read tokenizer file: {exc.strerror or exc}", path=path) from None
    try:
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - the Rust side raises a bare Exception (or a decode error)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"not a valid tokenizer file ({reason})", path=path) from None
    _check_digest(path, data)
    # Pretrained files often pad to a fixed length and truncate; encode_ids and pad_ids do both per batch.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _digest_file(path: Path) -> Path:
    return path.with_name(path.stem + ".sha256")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_digest(path: Path, data: bytes) -> None:
    """Refuse a tokenizer.json that is not the file saved with its model (same size, other ids: the
    model would silently answer differently). A file without a digest beside it (a pretrained
    model's, or one saved before digests) is taken as it is."""
    digest_file = _digest_file(path)
    if not digest_file.is_file():
        return
    try:
        expected = digest_file.read_text(encoding="utf-8").split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError):
        raise DataError("unreadable tokenizer digest", path=digest_file) from None
    if _sha256(data) != expected:
        raise DataError(f"is not the tokenizer this model was saved with (its sha256 differs from "
                        f"{digest_file.name}): restore the original file", path=path)


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
