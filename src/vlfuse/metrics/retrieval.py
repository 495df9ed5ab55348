"""Image-text retrieval: Recall@K, median and mean rank, with several captions per image.

Input: a similarity matrix S [num_images, num_texts] (higher = more similar) and `text_to_image`
[num_texts], the index of the image each caption belongs to (COCO and Flickr30k have 5 per image).

- Image -> text: for image i, rank_i = 1-based position of its *best-placed* own caption when all
  texts are sorted by S[i, :]; the query is a hit at K if any of its captions is in the top K.
- Text -> image: for caption t, rank_t = position of its image when all images are sorted by S[:, t].
- R@K = fraction of queries with rank <= K (as LAVIS/ALBEF/VSE++ report, there x100).
- Median rank = floor(median of the ranks), the VSE++/SCAN convention (a .5 median rounds down).
- Mean rank = mean of the ranks.

Ties are resolved against the model: a wrong item scoring *equal* to the best correct one ranks
ahead of it, so rank = 1 + #(wrong items with score >= best correct score). Implementations that
sort (LAVIS uses np.argsort) break ties by index order instead; both agree when scores are
distinct, and the pessimistic rule keeps a collapsed model (constant scores) from scoring R@1 = 1.

Memory: a few boolean [num_images, num_texts] masks (5k x 25k COCO test: ~125 MB each).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


def _inputs(similarity, text_to_image) -> tuple[torch.Tensor, torch.Tensor]:
    sims = torch.as_tensor(similarity)
    owner = torch.as_tensor(text_to_image)
    if sims.ndim != 2 or sims.numel() == 0:
        raise ValueError(f"similarity must be a non-empty [num_images, num_texts] matrix, "
                         f"got shape {tuple(sims.shape)}")
    if not sims.is_floating_point():
        sims = sims.float()
    if not torch.isfinite(sims).all():
        raise ValueError("similarity holds NaN or infinite values")
    if owner.ndim != 1 or owner.shape[0] != sims.shape[1]:
        raise ValueError(f"text_to_image must have one entry per text ({sims.shape[1]}), "
                         f"got shape {tuple(owner.shape)}")
    if owner.is_floating_point() or owner.dtype == torch.bool:
        raise ValueError("text_to_image must hold integer image indices")
    owner = owner.long().to(sims.device)  # so that GPU similarities work with a CPU list of owners
    if owner.min() < 0 or owner.max() >= sims.shape[0]:
        raise ValueError(f"text_to_image holds an index outside [0, {sims.shape[0]})")
    captioned = torch.zeros(sims.shape[0], dtype=torch.bool, device=sims.device).index_fill_(0, owner, True)
    if not captioned.all():
        missing = torch.nonzero(~captioned).flatten()[:5].tolist()
        raise ValueError(f"images without any caption (first: {missing}); image->text recall is undefined for them")
    return sims, owner


def retrieval_ranks(similarity, text_to_image) -> tuple[torch.Tensor, torch.Tensor]:
    """(image->text ranks [num_images], text->image ranks [num_texts]), 1-based, ties pessimistic."""
    return _ranks(*_inputs(similarity, text_to_image))


def _ranks(sims: torch.Tensor, owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    num_images, num_texts = sims.shape
    # owns[i, t]: caption t belongs to image i
    owns = owner.unsqueeze(0) == torch.arange(num_images, device=sims.device).unsqueeze(1)
    best_own = sims.masked_fill(~owns, -math.inf).amax(dim=1, keepdim=True)
    i2t = 1 + ((sims >= best_own) & ~owns).sum(dim=1)
    own_score = sims[owner, torch.arange(num_texts, device=sims.device)]
    t2i = (sims >= own_score.unsqueeze(0)).sum(dim=0)  # counts the own image too, hence already 1-based
    return i2t, t2i


def _floor_median(ranks: torch.Tensor) -> float:
    s, mid = ranks.sort().values, len(ranks) // 2
    return float(s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) // 2)  # integer ranks: floor((a+b)/2)


def _summary(ranks: torch.Tensor, ks: Sequence[int], prefix: str) -> dict[str, float]:
    out = {f"{prefix}_r{k}": (ranks <= k).double().mean().item() for k in ks}
    out[f"{prefix}_median_rank"] = _floor_median(ranks)
    out[f"{prefix}_mean_rank"] = ranks.double().mean().item()
    return out


def retrieval_metrics(similarity, text_to_image, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K, median and mean rank in both directions, and r_mean (mean of all recalls).

    Keys: i2t_r{k}, i2t_median_rank, i2t_mean_rank, t2i_r{k}, t2i_median_rank, t2i_mean_rank, r_mean.
    K must not exceed the candidates of a direction (texts for i2t, images for t2i).
    """
    sims, owner = _inputs(similarity, text_to_image)
    num_images, num_texts = sims.shape
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    if max(ks) > num_images:  # num_texts >= num_images: every image has a caption
        raise ValueError(f"K={max(ks)} exceeds the {num_images} candidate images of text->image retrieval")
    i2t, t2i = _ranks(sims, owner)
    out = {**_summary(i2t, ks, "i2t"), **_summary(t2i, ks, "t2i")}
    recalls = [out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks]
    out["r_mean"] = sum(recalls) / len(recalls)
    return out
