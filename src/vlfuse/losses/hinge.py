"""In-batch hinge (triplet) ranking loss of VSE++."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_mask, check_same_shape, check_rows, check_square


def vse_hinge_loss(similarity: torch.Tensor, margin: float = 0.2, max_violation: bool = False,
                   positives: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """VSE++ in-batch hinge loss (Faghri et al., 2018, "VSE++: Improving Visual-Semantic Embeddings
    with Hard Negatives").

    similarity: [B, B], s(i, j) = score of image i with text j; pair (i, i) is the positive.
    For each pair i, over the negatives j (every j != i, minus any extra `positives`):

        image -> text:  sum_j [margin - s(i, i) + s(i, j)]_+
        text -> image:  sum_j [margin - s(i, i) + s(j, i)]_+

    with `max_violation=True` the sums become maxima (only the hardest negative counts: VSE++);
    with False it is the sum-of-hinges loss of VSE0. The per-pair costs of both directions are
    added, then averaged over pairs (`reduction="mean"`) or summed as in the paper ("sum").

    positives: optional [B, B] bool, True where (image i, text j) also match (e.g. two captions of
    one image in the batch): those are never used as negatives. The diagonal is always positive.
    """
    check_square("similarity", similarity)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    eye = torch.eye(similarity.shape[0], dtype=torch.bool, device=similarity.device)
    not_negative = eye if positives is None else eye | check_mask("positives", positives, similarity.shape)
    diagonal = similarity.diagonal()
    # Costs are >= 0, so zeroing the non-negatives leaves both the sums and the maxima right.
    image_to_text = (margin - diagonal[:, None] + similarity).clamp_min(0).masked_fill(not_negative, 0)
    text_to_image = (margin - diagonal[None, :] + similarity).clamp_min(0).masked_fill(not_negative, 0)
    if max_violation:
        per_pair = image_to_text.amax(1) + text_to_image.amax(0)
    else:
        per_pair = image_to_text.sum(1) + text_to_image.sum(0)
    return per_pair.mean() if reduction == "mean" else per_pair.sum()


class VSEHingeLoss(nn.Module):
    """`vse_hinge_loss` on cosine similarities of image [B, D] and text [B, D] embeddings."""

    def __init__(self, margin: float = 0.2, max_violation: bool = True, reduction: str = "mean"):
        super().__init__()
        self.margin, self.max_violation, self.reduction = margin, max_violation, reduction

    def forward(self, image: torch.Tensor, text: torch.Tensor,
                positives: torch.Tensor | None = None) -> torch.Tensor:
        check_rows("image", image)
        check_same_shape("image", image, "text", text)
        similarity = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
        return vse_hinge_loss(similarity, self.margin, self.max_violation, positives, self.reduction)
