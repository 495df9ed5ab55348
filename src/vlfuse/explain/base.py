"""What the explain modules share: their error, the token-weight result, joint-sequence layouts."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import VLFuseError
from ..types import fusion_trait, token_spans


class ExplainError(VLFuseError, ValueError):
    """A request the model cannot answer (no attention to show, a layer it lacks); the message says what to do."""


@dataclass
class TokenWeights:
    """Weights on the image tokens, the currency every method pays in before painting.

    per_word: [B, Nt, Nv], one row per text token (None when the method has no per-word view);
    pooled: [B, Nv], the one map that summarises the question (how is method-specific, see each module).
    """

    per_word: torch.Tensor | None
    pooled: torch.Tensor


@dataclass(frozen=True)
class Layout:
    """Where the text and image tokens sit in a fusion's joint sequence (its token_layout, in slices)."""

    text: slice
    image: slice
    cls: int | None = None  # the row the head reads, if there is one


def joint_layout(fusion: str | object, nt: int, nv: int) -> Layout:
    """The layout of a fusion (a module, or its name in the factory's table), read off its token_layout."""
    if isinstance(fusion, str):
        from ..models.factory import FUSIONS

        name, layout = fusion, fusion_trait(FUSIONS.get(fusion), "token_layout")
    else:
        name, layout = type(fusion).__name__, fusion_trait(fusion, "token_layout")
    if layout is None or "text" not in layout or "image" not in layout:
        raise ExplainError(f"fusion {name!r} has no known joint-sequence layout")
    spans = token_spans(layout, nt, nv)
    return Layout(spans["text"], spans["image"], cls=spans["cls"].start if "cls" in spans else None)


def layered(attentions: dict[str, torch.Tensor], name: str) -> list[torch.Tensor]:
    """attentions["layer{i}.<name>"] in layer order (empty when the fusion has none)."""
    pattern = re.compile(rf"layer(\d+)\.{re.escape(name)}")
    found = sorted((int(m.group(1)), w) for key, w in attentions.items() if (m := pattern.fullmatch(key)))
    return [w for _, w in found]


def pick(weights: torch.Tensor, index: int | None, what: str) -> torch.Tensor:
    """weights [B, K, ...] -> one of the K (a layer or a head; negative counts from the end) or their mean."""
    if index is None:
        return weights.mean(1)
    k = weights.shape[1]
    if not -k <= index < k:
        raise ExplainError(f"{what} {index}: this model has {k} {what}s (0..{k - 1})")
    return weights[:, index]


def renormalise(weights: torch.Tensor) -> torch.Tensor:
    """Rows scaled to sum to 1 (all-zero rows stay zero)."""
    return weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)


def mean_over_words(per_word: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """[B, Nt, Nv] -> [B, Nv]: the mean over the real words, as the fusions pool their text."""
    weights = text_mask.to(per_word.dtype).unsqueeze(-1)
    return (per_word * weights).sum(1) / weights.sum(1).clamp_min(1.0)
