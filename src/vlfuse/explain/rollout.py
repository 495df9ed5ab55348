"""Attention rollout across layers (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020).

A layer with a residual connection passes on half of each token's own state and half of what it
attends to, so each layer's attention becomes  Â = (A + I) / 2  (A averaged over heads, or one
head when `head` is given; rows renormalised). Token i's share of input token j after layers
1..L is the product  R = Â_L ... Â_1  (row i, column j). `layer` stops the product after that layer.

Joint-sequence fusions (single_stream, mmbt, graph): R over the whole joint sequence from their
"layer{i}.joint" / "layer{i}.graph" matrices (graph: a node reads only its neighbours, so A is
already sparse). per_word[w] = the words' rows of R, restricted to the image columns and
renormalised over them ("of what this word carries from the image, how much from each token").
pooled = the [CLS] row (single_stream, mmbt: what the head reads), or the mean of the word rows (graph).

Two-stream fusions (cross_attention, co_attention): each text state is tracked as a mix of the
inputs [words; image tokens], M_t [Nt, Nt + Nv], starting from [I, 0]; image states likewise,
M_v from [0, I]. A layer first self-attends, M_t <- Â_self M_t, then cross-attends with the same
half-and-half residual rule, M_t <- (M_t + C M_v) / 2, where C is the head-averaged text_to_image
map and M_v the image stream's state that the cross-attention read. In cross_attention the image
stream is read-only (M_v stays [0, I], so a word's image share is its self-attention rollout chained
with each layer's text_to_image map); in co_attention it is rolled the same way through image_self
and image_to_text, reading the text stream's previous state. per_word = the image columns of M_t's
rows, renormalised; pooled = their mean over the real words (the text stream's mean pool).

similarity_attention has one attention step and no self-attention: its rollout is its text_to_image map.
Attention-free fusions (and gated, whose single pool has no layers) raise ExplainError.
"""

from __future__ import annotations

import torch

from .base import ExplainError, TokenWeights, joint_layout, layered, mean_over_words, pick, renormalise
from .maps import no_attention


def with_residual(attention: torch.Tensor) -> torch.Tensor:
    """(A + I) / 2 over [B, N, N], rows renormalised."""
    eye = torch.eye(attention.shape[-1], dtype=attention.dtype, device=attention.device)
    return renormalise(0.5 * attention + 0.5 * eye)


def _layers(blocks: list[torch.Tensor], layer: int | None) -> list[torch.Tensor]:
    if layer is None:
        return blocks
    if not -len(blocks) <= layer < len(blocks):
        raise ExplainError(f"layer {layer}: this model has {len(blocks)} layers (0..{len(blocks) - 1})")
    return blocks[: layer % len(blocks) + 1]


def joint_rollout(blocks: list[torch.Tensor], head: int | None = None) -> torch.Tensor:
    """R [B, N, N] = Â_L ... Â_1 from per-layer attentions [B, H, N, N]."""
    result = None
    for weights in blocks:
        step = with_residual(pick(weights, head, "head"))
        result = step if result is None else step @ result
    return result


def two_stream_rollout(text_self: list[torch.Tensor], text_to_image: list[torch.Tensor],
                       image_self: list[torch.Tensor] | None = None, image_to_text: list[torch.Tensor] | None = None,
                       head: int | None = None) -> torch.Tensor:
    """M_t [B, Nt, Nt + Nv]: each text state as a mix of the input words and image tokens."""
    b, _, nt, nv = text_to_image[0].shape
    like = text_to_image[0]
    eye_t, eye_v = (torch.eye(n, dtype=like.dtype, device=like.device) for n in (nt, nv))
    m_t = torch.cat([eye_t, like.new_zeros(nt, nv)], -1).expand(b, -1, -1)
    m_v = torch.cat([like.new_zeros(nv, nt), eye_v], -1).expand(b, -1, -1)
    for i in range(len(text_to_image)):
        new_t = with_residual(pick(text_self[i], head, "head")) @ m_t
        new_t = 0.5 * new_t + 0.5 * pick(text_to_image[i], head, "head") @ m_v
        if image_self is not None:  # co-attention: the image stream reads the text stream's previous state
            new_v = with_residual(pick(image_self[i], head, "head")) @ m_v
            m_v = 0.5 * new_v + 0.5 * pick(image_to_text[i], head, "head") @ m_t
        m_t = new_t
    return m_t


def rollout_weights(attentions: dict[str, torch.Tensor], fusion: str, text_mask: torch.Tensor,
                    image_mask: torch.Tensor, layer: int | None = None, head: int | None = None) -> TokenWeights:
    nt, nv = text_mask.shape[1], image_mask.shape[1]
    joint = layered(attentions, "joint") or layered(attentions, "graph")
    if joint:
        spot = joint_layout(fusion, nt, nv)
        r = joint_rollout(_layers(joint, layer), head)
        per_word = renormalise(r[:, spot.text, spot.image])
        pooled = mean_over_words(per_word, text_mask) if spot.cls is None else renormalise(r[:, spot.cls, spot.image])
        return TokenWeights(per_word, pooled)
    cross = layered(attentions, "text_to_image")
    if cross:
        text_self = layered(attentions, "text_self")
        image_self = layered(attentions, "image_self") or None
        image_to_text = layered(attentions, "image_to_text") or None
        keep = len(_layers(cross, layer))
        m_t = two_stream_rollout(text_self[:keep], cross[:keep], image_self and image_self[:keep],
                                 image_to_text and image_to_text[:keep], head)
        per_word = renormalise(m_t[..., nt:])
        return TokenWeights(per_word, mean_over_words(per_word, text_mask))
    if "text_to_image" in attentions:
        if layer not in (None, 0, -1) or head not in (None, 0, -1):
            raise ExplainError(f"fusion {fusion!r} has one attention step: no layers or heads to pick")
        per_word = attentions["text_to_image"]
        return TokenWeights(per_word, mean_over_words(per_word, text_mask))
    if "image_tokens" in attentions or "modality_weights" in attentions:
        raise ExplainError(f"fusion {fusion!r} has no layered attention to roll out; use method 'attention' "
                           "(its token pool, if enabled), 'saliency', 'occlusion' or 'gradcam'")
    raise no_attention(fusion)
