"""Grad-CAM on the image tokens (Selvaraju et al., "Grad-CAM", ICCV 2017), for every fusion.

A = the image encoder's output tokens [Nv, D] (the fusion's input; caught with a hook), g = the
gradient of the target answer's logit (default: the predicted one) with respect to A.
  variant "token" (default):  cam_n = relu(sum_c g_nc A_nc)
      each token's own gradient times its own activation. Image tokens are not a conv feature map
      whose channels mean the same thing at every place (object tokens, for one, are not), so
      weighting each token by its own gradient is the fitting form (HiResCAM, Draelos & Carin 2020).
  variant "classic":          alpha_c = mean_n g_nc (over real tokens),  cam_n = relu(sum_c alpha_c A_nc)
      the paper's channel weights, as over a conv grid.
Padded tokens get 0. The gradient flows through whatever the fusion reads, the tokens or only the
pooled vector, so attention-free fusions get a map too. A map is all zero when the answer does not
depend on the tokens' final states (e.g. a ViT whose pooled [CLS] state alone feeds a pooled-only fusion).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import ExplainError, TokenWeights
from .capture import run_model

VARIANTS = ("token", "classic")


def gradcam(model: nn.Module, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            target: torch.Tensor | None = None, variant: str = "token"):
    """Grad-CAM of each row (images and questions paired row by row).

    Returns (TokenWeights(per_word=None, pooled=cam [B, Nv]), logits [B, A], image Features).
    """
    if variant not in VARIANTS:
        raise ExplainError(f"Grad-CAM variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if images.dtype == torch.uint8:
        images = images.float() / 255
    with torch.enable_grad():
        # the input asks for gradients, so the graph to the tokens exists even with frozen encoders
        images = images.detach().float().requires_grad_(True)
        logits, _, image = run_model(model, images, input_ids, attention_mask)
        if target is None:
            target = logits.argmax(-1)
        score = logits.gather(1, target.view(-1, 1)).sum()  # rows are independent: one backward serves all
        (grad,) = torch.autograd.grad(score, image.tokens, allow_unused=True)
    tokens, mask = image.tokens.detach(), image.mask.to(image.tokens.dtype)
    grad = torch.zeros_like(tokens) if grad is None else grad
    if variant == "token":
        cam = (grad * tokens).sum(-1)
    else:
        alpha = (grad * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)
        cam = (alpha[:, None] * tokens).sum(-1)
    return TokenWeights(None, cam.clamp_min(0) * mask), logits.detach(), image
