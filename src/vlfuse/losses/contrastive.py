"""Symmetric InfoNCE (CLIP), optionally over the global batch of every process.

With `gather=True` each process all-gathers the embeddings of every process (with gradients) and
scores its own rows against all of them: logits are [B_local, B_global], so memory grows linearly
in the global batch (open_clip's local-loss scheme) rather than quadratically.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ._checks import check_rows, check_same_shape

MAX_LOG_SCALE = math.log(100.0)  # CLIP caps the logit scale at 100


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherRows(torch.autograd.Function):
    """Concatenate every process's rows; backward sends each process the summed gradient of its rows.

    Written on the public all_gather / all_reduce rather than torch.distributed.nn.functional.all_gather,
    which recent torch deprecates with a FutureWarning on every call. Works on gloo and NCCL alike;
    processes may hold different numbers of rows (padded for the collective, then trimmed).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        padded = x.new_zeros((max(sizes),) + tuple(x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # Every process's loss read our rows as keys: our gradient is the sum over processes.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start: start + ctx.sizes[ctx.rank]], None, None


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All rows of `x` from every process, in rank order, differentiable; and where ours start.

    Without an initialised process group (or with one process) returns (x, 0) unchanged.
    """
    rank, world = _rank_and_world()
    if world == 1:
        return x, 0
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    return _GatherRows.apply(x, sizes, rank), sum(sizes[:rank])


def _info_nce(image: torch.Tensor, text: torch.Tensor, all_image: torch.Tensor, all_text: torch.Tensor,
              offset: int, scale: torch.Tensor | float) -> torch.Tensor:
    """Local rows as queries against all keys; row i's positive is key offset + i."""
    labels = torch.arange(image.shape[0], device=image.device) + offset
    image_to_text = scale * image @ all_text.T
    text_to_image = scale * text @ all_image.T
    return (F.cross_entropy(image_to_text, labels) + F.cross_entropy(text_to_image, labels)) / 2


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float,
                     gather: bool = False) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP (Radford et al., 2021, "Learning Transferable Visual Models From
    Natural Language Supervision").

    With u_i = image_i / |image_i|, v_j = text_j / |text_j| and logits s * u_i . v_j:

        L = 1/2 [ -1/B sum_i log softmax_j(s u_i.v_j)[i]  -  1/B sum_j log softmax_i(s v_j.u_i)[j] ]

    image, text: [B, D], row i of each is a matching pair. scale: the logit scale s = 1 / temperature
    (a float or a tensor, e.g. `ContrastiveLoss`'s learnable one; not clamped here).
    gather: score the local rows against the rows of every process (see module docstring); the
    value on process r is the loss of its own rows, so the mean over processes equals the loss of
    the concatenated batch when every process holds the same number of rows. Falls back to the
    local batch when torch.distributed is not initialised.
    """
    check_rows("image", image)
    check_same_shape("image", image, "text", text)
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    if gather:
        # One collective for both modalities: fewer round trips, and one backward all_reduce.
        both, offset = gather_with_grad(torch.cat([image, text], -1))
        all_image, all_text = both.split(image.shape[-1], dim=-1)
    else:
        all_image, all_text, offset = image, text, 0
    return _info_nce(image, text, all_image, all_text, offset, scale)


class ContrastiveLoss(nn.Module):
    """`contrastive_loss` with a learnable temperature, as in CLIP.

    Stores log s (init ln(1 / temperature)) and keeps it in [0, ln max_scale] (s in [1, 100] by
    default): it is clamped in place before each use, so the stored value never drifts outside the
    range where a differentiable clamp would silently stop its gradient.
    """

    def __init__(self, temperature: float = 0.07, learnable: bool = True, gather: bool = False,
                 max_scale: float = 100.0):
        super().__init__()
        if not 1.0 <= 1.0 / temperature <= max_scale:
            raise ValueError(f"temperature {temperature} must lie in [1 / {max_scale}, 1]")
        log_scale = torch.tensor(math.log(1.0 / temperature))
        if learnable:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.gather, self.max_log_scale = gather, math.log(max_scale)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.detach().exp()

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.log_scale.clamp_(0.0, self.max_log_scale)
        return contrastive_loss(image, text, self.log_scale.exp(), self.gather)


def edited_caption_loss(image: torch.Tensor, text: torch.Tensor, edited: torch.Tensor, made: torch.Tensor,
                        scale: torch.Tensor | float) -> torch.Tensor:
    """Each image against its own caption and that caption's edits (NegCLIP's hard negatives; vlfuse.data.
    caption_edits): -1/B' sum_i log softmax(s [u_i.v_i, u_i.e_i1, ..., u_i.e_iN])[0] over the B' images
    with at least one edit.

    image, text: [B, D] unit embeddings, row-aligned pairs; edited: [B, N, D] unit embeddings of each
    caption's N edits; made: [B, N] False where no edit was made (that column is left out).
    """
    check_same_shape("image", image, "text", text)
    own = (image * text).sum(-1, keepdim=True)
    others = torch.einsum("bd,bnd->bn", image, edited).masked_fill(~made, float("-inf"))
    rows = made.any(1)
    logits = scale * torch.cat([own, others], 1)[rows]
    if not len(logits):  # nothing to edit in this batch: a zero that keeps the graph
        return own.sum() * 0
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
