"""Image-text matching: hard negatives drawn from a similarity matrix, and the binary matching loss.

The usual recipe (ALBEF, BLIP): score the batch with the dual encoders, draw for each image a
negative text (and for each text a negative image) that the encoders find similar, then train a
cross-attention head to tell the B positive pairs from the 2B sampled negative ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_mask, check_rows, check_square


def sample_hard_negatives(similarity: torch.Tensor, positives: torch.Tensor | None = None,
                          temperature: float = 1.0, generator: torch.Generator | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one negative text per image and one negative image per text, hard ones more often.

    similarity: [B, B], image i vs text j; (i, i) are positive pairs. positives: optional [B, B]
    bool of further matching pairs, never drawn. Image i draws text j with probability

        p(j | i) = softmax_j(similarity[i, j] / temperature) over the negatives j of i,

    and text j draws image i likewise down column j. temperature 0 takes the hardest negative
    (the argmax) outright; larger temperatures approach uniform sampling. No gradient flows.
    generator: seeds the draws; it must live on similarity's device.

    Returns (text_for_image [B], image_for_text [B]) as indices into the batch.
    """
    check_square("similarity", similarity)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    eye = torch.eye(similarity.shape[0], dtype=torch.bool, device=similarity.device)
    allowed = ~(eye if positives is None else eye | check_mask("positives", positives, similarity.shape))
    if not (allowed.any(1).all() and allowed.any(0).all()):
        raise ValueError("every image and every text needs at least one negative in the batch")
    scores = similarity.detach().float()

    def draw(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        if temperature == 0:
            return scores.masked_fill(~allowed, float("-inf")).argmax(1)
        probs = (scores / temperature).masked_fill(~allowed, float("-inf")).softmax(1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return draw(scores, allowed), draw(scores.T, allowed.T)


def itm_pairs(text_for_image: torch.Tensor, image_for_text: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 3B pairs to score: B positives (i, i), then (i, text_for_image[i]), then (image_for_text[j], j).

    Returns (image_index [3B], text_index [3B], labels [3B]: 1 = match); feed the indices to
    `Features.index_select` to build the matching head's inputs.
    """
    check_rows("text_for_image", text_for_image, dim=1)
    if image_for_text.shape != text_for_image.shape:
        raise ValueError(f"text_for_image {tuple(text_for_image.shape)} and image_for_text "
                         f"{tuple(image_for_text.shape)} must have the same shape")
    batch = torch.arange(text_for_image.shape[0], device=text_for_image.device)
    image_index = torch.cat([batch, batch, image_for_text])
    text_index = torch.cat([batch, text_for_image, batch])
    labels = torch.cat([torch.ones_like(batch), torch.zeros_like(batch), torch.zeros_like(batch)])
    return image_index, text_index, labels


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of matching, averaged over pairs.

    logits: [N, 2] (class 1 = match, as in UNITER / ALBEF heads: softmax cross-entropy) or [N]
    (one matching logit: sigmoid cross-entropy). labels: [N], 1 for a matching pair, 0 otherwise.
    """
    if logits.dim() not in (1, 2) or (logits.dim() == 2 and logits.shape[1] != 2):
        raise ValueError(f"logits must be [N, 2] or [N], got {tuple(logits.shape)}")
    check_rows("logits", logits, dim=logits.dim())
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must have shape {tuple(logits.shape[:1])}, got {tuple(labels.shape)}")
    if logits.dim() == 2:
        return F.cross_entropy(logits, labels.long())
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
