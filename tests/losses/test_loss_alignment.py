"""MMD and CORAL: zero for matching distributions, growing with the mismatch."""

from __future__ import annotations

import pytest
import torch

from vlfuse.losses.alignment import coral_loss, mmd_loss


def _sample(n=200, d=4, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bandwidths", [None, (0.5, 1.0, 2.0)], ids=["median", "fixed"])
def test_mmd_zero_for_identical_and_grows_with_shift(bandwidths):
    x = _sample()
    assert mmd_loss(x, x.clone(), bandwidths).item() == pytest.approx(0.0, abs=1e-5)
    y = _sample(seed=1)
    values = [mmd_loss(x, y + shift, bandwidths).item() for shift in (0.0, 0.5, 1.0, 2.0)]
    assert values[0] < 0.02
    assert all(a < b for a, b in zip(values, values[1:]))


def test_mmd_gradient_is_finite_and_pulls_sets_together():
    x = _sample(50).requires_grad_()
    y = _sample(50, seed=1) + 1.0
    loss = mmd_loss(x, y)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    moved = (x - 0.5 * x.grad / x.grad.norm()).detach()
    assert mmd_loss(moved, y).item() < loss.item()


def test_coral_zero_for_equal_covariance_and_positive_otherwise():
    x = _sample(100)
    assert coral_loss(x, x + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # a mean shift is invisible
    assert coral_loss(x, x * 2).item() > 0.0
    # Hand value in 1-d: (var_x - var_y)^2 / 4.
    a, b = torch.tensor([[0.0], [2.0]]), torch.tensor([[0.0], [4.0]])
    assert coral_loss(a, b).item() == pytest.approx((2.0 - 8.0) ** 2 / 4)


@pytest.mark.parametrize("fn", [mmd_loss, coral_loss])
def test_bad_inputs_raise(fn):
    with pytest.raises(ValueError):
        fn(torch.randn(5, 3), torch.randn(5, 4))
    with pytest.raises(ValueError):
        fn(torch.randn(0, 3), torch.randn(5, 3))
    with pytest.raises(ValueError):
        fn(torch.randn(5), torch.randn(5))


def test_specific_bad_inputs_raise():
    with pytest.raises(ValueError):
        coral_loss(torch.randn(1, 3), torch.randn(5, 3))
    with pytest.raises(ValueError):
        mmd_loss(torch.randn(5, 3), torch.randn(5, 3), bandwidths=(1.0, 0.0))
