"""Raw attention maps: how much each text token (a word) attends to each image token.

`attention_stack` gathers, whatever the fusion, one tensor [B, L, H, Nt, Nv] (layers, heads, words,
image tokens); `paint.paint` turns any slice of it into pixel maps (per word, head, layer).

Where the weights come from, by the names the fusions return:
  layer{i}.text_to_image [B, H, Nt, Nv]  cross_attention, co_attention, single_stream, mmbt
                                         (the last two: their joint weights on the image part,
                                         renormalised over the image tokens by the fusion itself)
  text_to_image [B, Nt, Nv]              similarity_attention: one layer, one head
  layer{i}.graph [B, H, N, N]            graph: rows of the words (nodes 0..Nt-1), columns of the image
                                         nodes (Nt..Nt+Nv-1), renormalised over those columns
  image_tokens [B, Nv]                   gated with token_attention: a question-blind attention pool,
                                         no per-word view
Every other fusion (concat, sum, product, outer_product, bilinear, late, gated without token
attention) has no attention over image tokens: ExplainError, pointing to Grad-CAM.
"""

from __future__ import annotations

import torch

from .base import ExplainError, TokenWeights, joint_layout, layered, mean_over_words, pick, renormalise


def no_attention(fusion: str) -> ExplainError:
    return ExplainError(f"fusion {fusion!r} has no attention to show; "
                        "use a method for every fusion: 'saliency', 'occlusion' or 'gradcam'")


def attention_stack(attentions: dict[str, torch.Tensor], fusion: str, nt: int, nv: int) -> torch.Tensor:
    """[B, L, H, Nt, Nv]: each layer's and head's word -> image-token weights."""
    if blocks := layered(attentions, "text_to_image"):
        return torch.stack(blocks, 1)
    if "text_to_image" in attentions:
        return attentions["text_to_image"][:, None, None]
    if blocks := layered(attentions, "graph"):
        layout = joint_layout(fusion, nt, nv)
        return renormalise(torch.stack(blocks, 1)[..., layout.text, layout.image])
    raise no_attention(fusion)


def attention_weights(attentions: dict[str, torch.Tensor], fusion: str, text_mask: torch.Tensor,
                      image_mask: torch.Tensor, layer: int | None = None, head: int | None = None) -> TokenWeights:
    """Per-word weights of one layer and head (None: the mean over layers, over heads); pooled is
    their mean over the real words."""
    if "image_tokens" in attentions and not layered(attentions, "text_to_image"):
        if layer not in (None, 0, -1) or head not in (None, 0, -1):
            raise ExplainError(f"fusion {fusion!r} has one attention pool: no layers or heads to pick")
        return TokenWeights(None, attentions["image_tokens"])
    stack = attention_stack(attentions, fusion, text_mask.shape[1], image_mask.shape[1])
    per_word = _select(stack, layer, head)
    return TokenWeights(per_word, mean_over_words(per_word, text_mask))


def _select(stack: torch.Tensor, layer: int | None, head: int | None) -> torch.Tensor:
    """[B, L, H, Nt, Nv] -> [B, Nt, Nv]: one layer (or their mean), then one head (or their mean)."""
    return pick(pick(stack, layer, "layer"), head, "head")
