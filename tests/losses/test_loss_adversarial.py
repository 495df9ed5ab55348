"""Gradient reversal and the modality discriminator."""

from __future__ import annotations

import pytest
import torch

from vlfuse.losses.adversarial import (GradientReversal, ModalityDiscriminator, dann_lambda, grad_reverse,
                                       modality_adversarial_loss)


@pytest.mark.parametrize("lambd", [1.0, 0.3, 0.0])
def test_forward_identity_backward_reversed(lambd):
    x = torch.randn(4, 3, requires_grad=True)
    upstream = torch.randn(4, 3)
    y = grad_reverse(x, lambd)
    assert torch.equal(y, x)
    y.backward(upstream)
    torch.testing.assert_close(x.grad, -lambd * upstream)


def test_layer_follows_its_lambda():
    layer = GradientReversal(0.5)
    x = torch.ones(2, requires_grad=True)
    layer(x).sum().backward()
    layer.lambd = 2.0
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((2,), -2.5))


def test_schedule_rises_from_zero_to_one():
    values = [dann_lambda(p) for p in (0.0, 0.1, 0.5, 1.0)]
    assert values[0] == 0.0 and all(a < b for a, b in zip(values, values[1:])) and values[-1] > 0.99


def test_discriminator_loss_value():
    image_logits, text_logits = torch.tensor([2.0, 0.0]), torch.tensor([-1.0])
    expected = (-(torch.nn.functional.logsigmoid(image_logits)).mean()
                - torch.nn.functional.logsigmoid(-text_logits).mean()) / 2
    assert modality_adversarial_loss(image_logits, text_logits).item() == pytest.approx(expected.item(), rel=1e-6)


def test_discriminator_learns_while_encoder_gradient_is_reversed():
    torch.manual_seed(0)
    disc = ModalityDiscriminator(dim=4, hidden=8, lambd=1.0)
    image = (torch.randn(6, 4) + 2).requires_grad_()
    text = (torch.randn(6, 4) - 2).requires_grad_()
    disc.loss(image, text).backward()
    # Without reversal, the same loss gives the opposite embedding gradients.
    reversed_grad = image.grad.clone()
    image.grad = None
    disc.reverse.lambd = -1.0
    disc.loss(image, text).backward()
    torch.testing.assert_close(reversed_grad, -image.grad)
    # The discriminator's own parameters still descend: a few steps separate the modalities.
    disc.reverse.lambd = 1.0
    opt = torch.optim.SGD(disc.parameters(), lr=0.5)
    first = disc.loss(image.detach(), text.detach()).item()
    for _ in range(20):
        opt.zero_grad()
        disc.loss(image.detach(), text.detach()).backward()
        opt.step()
    assert disc.loss(image.detach(), text.detach()).item() < first
    assert disc(image.detach()).shape == (6,)


def test_bad_inputs_raise():
    disc = ModalityDiscriminator(dim=4)
    with pytest.raises(ValueError):
        disc.loss(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError):
        disc.loss(torch.randn(0, 4), torch.randn(3, 4))
    with pytest.raises(ValueError):
        modality_adversarial_loss(torch.randn(3, 1), torch.randn(3))
