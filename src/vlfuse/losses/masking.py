"""BERT masking of token ids for masked language modelling."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import check_mask, check_rows

IGNORE_INDEX = -100  # what torch's cross_entropy skips by default


def mask_tokens(input_ids: torch.Tensor, mask_token_id: int, vocab_size: int,
                attention_mask: torch.Tensor | None = None, special_ids: Sequence[int] = (),
                probability: float = 0.15, mask_ratio: float = 0.8, random_ratio: float = 0.1,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking (Devlin et al., 2019, "BERT: Pre-training of Deep Bidirectional Transformers").

    Each real, non-special token is chosen with probability `probability` (15%); a chosen token is
    replaced by [MASK] with probability `mask_ratio` (80%), by a random token with `random_ratio`
    (10%), and left as it is otherwise (10%), so the model cannot tell which tokens it must predict.

    input_ids: [B, L] long. attention_mask: [B, L], True (or 1) for real tokens; padding is never
    chosen. special_ids: ids never chosen (e.g. [CLS], [SEP], [PAD]) and never drawn as random
    replacements, nor is [MASK]. generator: seeds the draws; it must live on input_ids' device.

    Returns (masked_ids [B, L], labels [B, L]): labels hold the original id where a token was
    chosen and -100 elsewhere, ready for `mlm_loss` / cross_entropy.
    """
    check_rows("input_ids", input_ids)
    if not 0.0 <= probability <= 1.0 or mask_ratio < 0 or random_ratio < 0 or mask_ratio + random_ratio > 1:
        raise ValueError(f"need 0 <= probability <= 1 and mask_ratio + random_ratio <= 1, got "
                         f"{probability}, {mask_ratio}, {random_ratio}")
    device = input_ids.device
    specials = torch.tensor(sorted(set(special_ids)), dtype=input_ids.dtype, device=device)
    eligible = ~torch.isin(input_ids, specials)
    if attention_mask is not None:
        eligible &= check_mask("attention_mask", attention_mask, input_ids.shape)

    chosen = eligible & (torch.rand(input_ids.shape, generator=generator, device=device) < probability)
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)
    roll = torch.rand(input_ids.shape, generator=generator, device=device)
    to_mask = chosen & (roll < mask_ratio)
    to_random = chosen & (roll >= mask_ratio) & (roll < mask_ratio + random_ratio)

    candidates = torch.ones(vocab_size, dtype=torch.bool, device=device)
    candidates[specials[(specials >= 0) & (specials < vocab_size)]] = False
    if 0 <= mask_token_id < vocab_size:
        candidates[mask_token_id] = False
    candidates = candidates.nonzero().squeeze(1).to(input_ids.dtype)
    if len(candidates) == 0:
        raise ValueError("no ordinary token id left to draw random replacements from")
    random_ids = candidates[torch.randint(len(candidates), input_ids.shape, generator=generator, device=device)]

    masked = input_ids.masked_fill(to_mask, mask_token_id)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels
