"""Few-shot classifiers over frozen features: support (features, labels) in, query predictions out.

prototype      nearest class mean by cosine similarity (Snell et al. 2017, prototypical networks,
               with the cosine of SimpleShot, Wang et al. 2019): no training at all
linear_probe   multinomial logistic regression, full-batch L-BFGS with an L2 penalty: the linear
               evaluation protocol of CLIP (Radford et al. 2021) on k examples

Both read L2-normalised features, so the scale the fusion happened to learn does not matter.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

PROBE_STEPS = 300  # L-BFGS iterations: converges on a few hundred examples of width a few hundred
PROBE_L2 = 1e-3   # the penalty keeps the weights finite when the support set is separable (always, at k=1)
PROBE_SCALE = 10.0  # logits = scale * w.x on unit features: a softmax sharp enough to fit k examples


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


def prototype_predict(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor,
                      classes: int) -> torch.Tensor:
    """Class of the nearest class mean (cosine) for each query row; a class with no support never wins."""
    support, query = _unit(support), _unit(query)
    sums = torch.zeros(classes, support.shape[1]).index_add_(0, labels, support)
    counts = torch.bincount(labels, minlength=classes)
    scores = query @ _unit(sums).T
    scores[:, counts == 0] = float("-inf")
    return scores.argmax(-1)


def linear_probe_predict(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, classes: int,
                         steps: int = PROBE_STEPS, l2: float = PROBE_L2) -> torch.Tensor:
    """Logistic regression fitted on the support set (deterministic: zero start, full batch)."""
    x = _unit(support)
    weight = torch.zeros(classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = F.cross_entropy(PROBE_SCALE * (x @ weight.T) + bias, labels) + l2 * weight.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(loss)
    with torch.no_grad():
        return (PROBE_SCALE * (_unit(query) @ weight.T) + bias).argmax(-1)


Method = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
METHODS: dict[str, Method] = {"prototype": prototype_predict, "linear_probe": linear_probe_predict}
