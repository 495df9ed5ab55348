"""Distribution alignment regularisers between two sets of embeddings (e.g. image vs text)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import check_rows


def _check_sets(x: torch.Tensor, y: torch.Tensor, min_rows: int = 1) -> None:
    check_rows("x", x)
    check_rows("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must share a width")
    if min(x.shape[0], y.shape[0]) < min_rows:
        raise ValueError(f"each set needs at least {min_rows} rows, got {x.shape[0]} and {y.shape[0]}")


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Expanded form rather than cdist: its gradient stays finite at zero distance.
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T).clamp_min(0)


def mmd_loss(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] | None = None,
             multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> torch.Tensor:
    """Squared maximum mean discrepancy (Gretton et al., 2012, "A Kernel Two-Sample Test") with a
    multi-bandwidth Gaussian kernel (as in Long et al., 2015, DAN):

        k(a, b) = 1/S sum_s exp(-|a - b|^2 / (2 sigma_s^2))
        MMD^2   = mean k(x, x') + mean k(y, y') - 2 mean k(x, y)     (biased, >= 0)

    x: [N, D], y: [M, D]. bandwidths: the sigma_s; by default sigma_s^2 = m * median pairwise
    squared distance of the pooled samples (the median heuristic, not differentiated) for each
    m in `multipliers`. 0 for identical samples; grows as the distributions drift apart.
    """
    _check_sets(x, y)
    given = multipliers if bandwidths is None else bandwidths
    if not given or any(float(s) <= 0 for s in given):
        raise ValueError(f"need at least one bandwidth (or multiplier), each > 0, got {list(given)}")
    z = torch.cat([x, y])
    d2 = _squared_distances(z, z)
    if bandwidths is None:
        off_diagonal = d2.detach()[~torch.eye(len(z), dtype=torch.bool, device=z.device)]
        base = off_diagonal.median().clamp_min(1e-12) if off_diagonal.numel() else d2.new_tensor(1.0)
        variances = [base * float(m) for m in multipliers]
    else:
        variances = [float(s) ** 2 for s in bandwidths]
    kernel = sum(torch.exp(-d2 / (2 * v)) for v in variances) / len(variances)
    n = x.shape[0]
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


def _covariance(x: torch.Tensor) -> torch.Tensor:
    centred = x - x.mean(0, keepdim=True)
    return centred.T @ centred / (x.shape[0] - 1)


def coral_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CORAL (Sun & Saenko, 2016, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation"):

        L = |C_x - C_y|_F^2 / (4 D^2)

    with C the unbiased covariance of the rows of x [N, D] and y [M, D] (N, M >= 2). 0 when the
    second-order statistics agree, whatever the means.
    """
    _check_sets(x, y, min_rows=2)
    d = x.shape[1]
    return (_covariance(x) - _covariance(y)).pow(2).sum() / (4 * d * d)
