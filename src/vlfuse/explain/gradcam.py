"""Grad-CAM (Selvaraju et al., ICCV 2017) and saliency on the image tokens, for every fusion.

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

Saliency (Simonyan et al., 2014), from the same gradient:  s_n = ||g_n||
    Grad-CAM's g.A assumes activations whose size carries the evidence (post-ReLU conv maps, where 0
    means "nothing here"). The transformer fusions LayerNorm the image tokens they read, and a
    LayerNorm ignores its input's scale, so there the gradient is orthogonal to the token and g.A is
    rounding noise. The gradient's norm, how strongly the answer reacts to the token's content, does
    not depend on a scale the fusion throws away.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import ExplainError, TokenWeights
from .capture import run_model

VARIANTS = ("token", "classic")


def token_gradient(model: nn.Module, images: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor, target: torch.Tensor | None = None):
    """(g [B, Nv, D], logits [B, A], image Features): the gradient of each row's target logit (default:
    the predicted answer) with respect to the image tokens the fusion read."""
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
    grad = torch.zeros_like(image.tokens) if grad is None else grad
    return grad, logits.detach(), image


def gradcam(model: nn.Module, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            target: torch.Tensor | None = None, variant: str = "token"):
    """Grad-CAM of each row (images and questions paired row by row).

    Returns (TokenWeights(per_word=None, pooled=cam [B, Nv]), logits [B, A], image Features).
    """
    if variant not in VARIANTS:
        raise ExplainError(f"Grad-CAM variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    grad, logits, image = token_gradient(model, images, input_ids, attention_mask, target)
    tokens, mask = image.tokens.detach(), image.mask.to(image.tokens.dtype)
    if variant == "token":
        cam = (grad * tokens).sum(-1)
    else:
        alpha = (grad * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)
        cam = (alpha[:, None] * tokens).sum(-1)
    return TokenWeights(None, cam.clamp_min(0) * mask), logits, image


def saliency(model: nn.Module, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             target: torch.Tensor | None = None):
    """Saliency of each row: (TokenWeights(None, ||g_n|| [B, Nv]), logits [B, A], image Features)."""
    grad, logits, image = token_gradient(model, images, input_ids, attention_mask, target)
    return TokenWeights(None, grad.norm(dim=-1) * image.mask.to(grad.dtype)), logits, image
