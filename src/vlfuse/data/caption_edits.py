"""Hard negative captions made by a one-token edit, for contrastive training that must notice details.

In-batch negatives of image-text contrastive training are other photos' captions: they differ in
almost everything, so a model can win by matching a caption's gist and never learn which colour goes
with which object (Yuksekgonul et al. 2023, "When and why vision-language models behave like
bags-of-words", whose NegCLIP adds edited captions as negatives). Here the edit needs no parser:
one token is replaced by another token that the training captions show between the same two
neighbours ("a red circle" -> "a green circle", "circle at the top" -> "square at the top"), so the
caption keeps its form and says one thing that is not in the image.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch


class CaptionEdits:
    """The substitutes of each (left, right) token context seen in `captions` (token id sequences)."""

    def __init__(self, captions: Iterable[Sequence[int]]):
        seen: dict[tuple[int, int], set[int]] = defaultdict(set)
        for ids in captions:
            for left, middle, right in zip(ids, ids[1:], ids[2:]):
                seen[(left, right)].add(middle)
        self.substitutes = {context: torch.tensor(sorted(tokens)) for context, tokens in seen.items()
                            if len(tokens) > 1}

    def edit(self, ids: Sequence[int], generator: torch.Generator) -> list[int] | None:
        """`ids` with one token replaced by a different substitute for its context (a random place and
        substitute); None when no token of `ids` has one."""
        places = [(j, self.substitutes[(ids[j - 1], ids[j + 1])]) for j in range(1, len(ids) - 1)
                  if (ids[j - 1], ids[j + 1]) in self.substitutes]
        if not places:
            return None
        j, tokens = places[int(torch.randint(len(places), (), generator=generator))]
        others = tokens[tokens != ids[j]]  # never empty: a context has at least two substitutes
        edited = list(ids)
        edited[j] = int(others[int(torch.randint(len(others), (), generator=generator))])
        return edited

    def edit_batch(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, count: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`count` edits of each caption of a padded batch: (ids [B, count, L], mask [B, count, L],
        made [B, count] False where a caption had nothing to edit; its rows then repeat the caption)."""
        ids = input_ids[:, None].repeat(1, count, 1)
        made = torch.zeros(ids.shape[:2], dtype=torch.bool)
        for b, (row, mask) in enumerate(zip(input_ids.tolist(), attention_mask.bool().tolist())):
            caption = [t for t, real in zip(row, mask) if real]
            for c in range(count):
                edited = self.edit(caption, generator)
                if edited is not None:
                    ids[b, c, : len(edited)] = torch.tensor(edited)
                    made[b, c] = True
        return ids, attention_mask[:, None].expand_as(ids), made.to(input_ids.device)
