"""finetune: a cosine classifier over the new answers, started at their class means (weight imprinting,
Qi et al. 2018, so step 0 is the prototype classifier), trained together with the fusion's top on the
support set; the encoders and the lower fusion layers stay frozen.

The fusion's top is the last layer of each of its stacks (a ModuleList named *blocks or *layers) and
everything outside the stacks (norms, pooling, projections); a fusion without stacks is all top.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .features import Encoded, fused_pooled

FINETUNE_STEPS = 100  # full-batch Adam steps on the support set
FINETUNE_LR = 1e-3    # the fusion's top layer; the classifier moves 10x faster, it starts from k examples
SCALE = 10.0          # logits = SCALE * cosine(pooled, class weight)


def top_parameters(fusion: nn.Module) -> list[nn.Parameter]:
    """The parameters fine-tuning trains: all but those of the lower layers of each stack."""
    lower = set()
    for name, module in fusion.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1].endswith(("blocks", "layers")):
            lower |= {id(p) for layer in list(module)[:-1] for p in layer.parameters()}
    return [p for p in fusion.parameters() if id(p) not in lower]


def _logits(pooled: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return SCALE * F.normalize(pooled, dim=-1) @ F.normalize(weight, dim=-1).T


def finetune_predict(fusion: nn.Module, encoded: Encoded, support: torch.Tensor, labels: torch.Tensor,
                     query: torch.Tensor, classes: int, steps: int = FINETUNE_STEPS,
                     lr: float = FINETUNE_LR) -> torch.Tensor:
    """Predicted class of each query question row, after fine-tuning a copy of `fusion` (the original is
    left as it was). Dropout stays off: the k examples are all the data, and the result is deterministic."""
    fusion = copy.deepcopy(fusion).eval()
    fusion.requires_grad_(False)
    top = top_parameters(fusion)
    for p in top:
        p.requires_grad_(True)
    with torch.no_grad():
        start = F.normalize(fused_pooled(fusion, encoded, support), dim=-1)
        means = torch.zeros(classes, start.shape[1]).index_add_(0, labels, start)
    weight = nn.Parameter(means)
    optimizer = torch.optim.Adam([{"params": top, "lr": lr}, {"params": [weight], "lr": 10 * lr}])
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(_logits(fused_pooled(fusion, encoded, support), weight), labels).backward()
            optimizer.step()
    with torch.no_grad():
        logits = _logits(fused_pooled(fusion, encoded, query), weight)
        logits[:, torch.bincount(labels, minlength=classes) == 0] = float("-inf")
        return logits.argmax(-1)
