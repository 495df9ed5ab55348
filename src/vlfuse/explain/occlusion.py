"""Occlusion on the image tokens (Zeiler & Fergus, ECCV 2014, one token at a time), for every fusion.

  o_n = relu(z - z_without_n)

z is the target answer's logit (default: the predicted one) with every image token; z_without_n is
the same logit when token n is masked out, as if the encoder had never produced it. No gradients
and no assumption about what the activations mean: the map says how much the answer loses without
each token. It costs one pass of the fusion and head per image token (run as one batch; the
image is encoded once), so it is the slow, faithful reference the gradient maps can be checked
against. Fusions that read only the pooled image vector see the token go when the encoder's pool is
the mean of its tokens (it is recomputed without it); a [CLS]-style pool cannot lose one token, and
their map is then all zero.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..types import masked_mean
from .base import TokenWeights
from .capture import run_model


@torch.no_grad()
def occlusion(model: nn.Module, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              target: torch.Tensor | None = None):
    """Occlusion of each row: (TokenWeights(None, o [B, Nv]), logits [B, A], image Features)."""
    logits, _, image = run_model(model, images, input_ids, attention_mask)
    if target is None:
        target = logits.argmax(-1)
    b, nv = image.mask.shape
    # nv copies of the batch, the images encoded once: copy n of each row loses image token n
    copies = image.index_select(torch.arange(nv * b, device=image.mask.device) % b)
    mask = copies.mask.view(nv, b, nv).clone()
    each = torch.arange(nv, device=mask.device)
    mask[each, :, each] = False
    mask = mask.view(nv * b, nv)
    pooled = copies.pooled
    if torch.allclose(image.pooled, masked_mean(image.tokens, image.mask), atol=1e-5):
        pooled = masked_mean(copies.tokens, mask)  # a mean-pooled encoder: the pool loses the token too
    occluded, _ = model.from_image_features(dataclasses.replace(copies, mask=mask, pooled=pooled),
                                            input_ids.repeat(nv, 1), attention_mask.repeat(nv, 1))
    without = occluded.gather(1, target.repeat(nv).view(-1, 1)).view(nv, b).T  # [B, Nv]
    full = logits.gather(1, target.view(-1, 1))
    # an image whose only real token is masked has nothing left to attend to: no reading from it
    loss = torch.nan_to_num(full - without, nan=0.0, posinf=0.0, neginf=0.0)
    return TokenWeights(None, loss.clamp_min(0) * image.mask.to(loss.dtype)), logits, image
