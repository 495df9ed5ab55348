"""Cross-modal translation: zero for the identity map, perturbation only in training."""

from __future__ import annotations

import pytest
import torch

from vlfuse.losses.translation import CrossModalTranslator, perturb, translation_loss


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_identity_map_costs_nothing(kind):
    x = torch.randn(5, 8)
    assert translation_loss(x, x.clone(), kind).item() == pytest.approx(0.0, abs=1e-6)
    assert translation_loss(x, -x, kind).item() > 0


def test_values_by_hand_and_target_detached():
    predicted = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    target = torch.tensor([[0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    assert translation_loss(predicted, target, "cosine").item() == pytest.approx(0.5)  # (1 - 0 + 1 - 1) / 2
    loss = translation_loss(predicted, target, "mse")
    assert loss.item() == pytest.approx((1 + 1 + 0 + 1) / 4)
    loss.backward()
    assert predicted.grad is not None and target.grad is None
    translation_loss(predicted, target, "mse", detach_target=False).backward()
    assert target.grad is not None


def test_translator_learns_a_map_and_perturbs_only_in_training():
    torch.manual_seed(0)
    source = torch.randn(32, 4)
    target = source @ torch.randn(4, 6)
    translator = CrossModalTranslator(4, 6, hidden=16, kind="mse", noise_std=0.05, dropout=0.1)
    opt = torch.optim.Adam(translator.parameters(), lr=1e-2)
    translator.eval()
    first = translator.loss(source, target).item()
    assert torch.equal(translator(source), translator(source))  # eval: deterministic
    translator.train()
    assert not torch.equal(translator(source), translator(source))  # train: perturbed
    for _ in range(100):
        opt.zero_grad()
        translator.loss(source, target).backward()
        opt.step()
    translator.eval()
    assert translator.loss(source, target).item() < 0.5 * first


def test_perturb_is_seedable_and_inverted_dropout_keeps_the_mean():
    x = torch.ones(200, 50)
    a = perturb(x, 0.1, 0.2, torch.Generator().manual_seed(0))
    b = perturb(x, 0.1, 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert a.mean().item() == pytest.approx(1.0, abs=0.03)
    assert torch.equal(perturb(x), x)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        translation_loss(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError):
        translation_loss(torch.randn(0, 4), torch.randn(0, 4))
    with pytest.raises(ValueError):
        translation_loss(torch.randn(3, 4), torch.randn(3, 4), kind="l1")
    with pytest.raises(ValueError):
        perturb(torch.randn(3), dropout=1.0)
    with pytest.raises(ValueError):
        CrossModalTranslator(4, kind="l1")
