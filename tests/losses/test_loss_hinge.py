"""VSE++ hinge loss, checked by hand on a 3x3 similarity matrix."""

from __future__ import annotations

import pytest
import torch

from vlfuse.losses.hinge import VSEHingeLoss, vse_hinge_loss

# s(i, j): image i vs text j.
SIM = torch.tensor([[0.9, 0.3, 0.8],
                    [0.5, 0.4, 0.1],
                    [0.2, 0.6, 0.7]])
MARGIN = 0.2
# image -> text, row i: [m - s_ii + s_ij]_+ for j != i
#   i=0: [0.2-0.9+0.3]_+ = 0,   [0.2-0.9+0.8]_+ = 0.1
#   i=1: [0.2-0.4+0.5]_+ = 0.3, [0.2-0.4+0.1]_+ = 0
#   i=2: [0.2-0.7+0.2]_+ = 0,   [0.2-0.7+0.6]_+ = 0.1
# text -> image, column j: [m - s_jj + s_ij]_+ for i != j
#   j=0: [0.2-0.9+0.5]_+ = 0,   [0.2-0.9+0.2]_+ = 0
#   j=1: [0.2-0.4+0.3]_+ = 0.1, [0.2-0.4+0.6]_+ = 0.4
#   j=2: [0.2-0.7+0.8]_+ = 0.3, [0.2-0.7+0.1]_+ = 0
SUM_PER_PAIR = [0.1 + 0.0, 0.3 + 0.5, 0.1 + 0.3]
MAX_PER_PAIR = [0.1 + 0.0, 0.3 + 0.4, 0.1 + 0.3]


def test_sum_of_hinges_by_hand():
    assert vse_hinge_loss(SIM, MARGIN).item() == pytest.approx(sum(SUM_PER_PAIR) / 3, abs=1e-6)
    assert vse_hinge_loss(SIM, MARGIN, reduction="sum").item() == pytest.approx(sum(SUM_PER_PAIR), abs=1e-6)


def test_hardest_negative_by_hand():
    assert vse_hinge_loss(SIM, MARGIN, max_violation=True).item() == pytest.approx(sum(MAX_PER_PAIR) / 3, abs=1e-6)


def test_extra_positives_are_not_negatives():
    positives = torch.zeros(3, 3, dtype=torch.bool)
    positives[2, 1] = True  # text 1 also describes image 2
    # Drops image->text cost (2, 1) = 0.1 and text->image cost (2 vs column 1) = 0.4.
    expected = (sum(SUM_PER_PAIR) - 0.1 - 0.4) / 3
    assert vse_hinge_loss(SIM, MARGIN, positives=positives).item() == pytest.approx(expected, abs=1e-6)


def test_well_separated_batch_costs_nothing_and_gradients_flow():
    sim = torch.eye(4).requires_grad_()
    assert vse_hinge_loss(sim, 0.5, max_violation=True).item() == 0.0
    loss = vse_hinge_loss(SIM.clone().requires_grad_(), MARGIN)
    loss.backward()


def test_module_uses_cosine_similarity():
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    sim = torch.nn.functional.normalize(image, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
    module = VSEHingeLoss(margin=0.3, max_violation=True)
    assert module(image * 7, text).item() == pytest.approx(vse_hinge_loss(sim, 0.3, True).item(), rel=1e-5)


@pytest.mark.parametrize("sim", [torch.zeros(2, 3), torch.zeros(0, 0), torch.zeros(3)], ids=["rect", "empty", "1d"])
def test_bad_shapes_raise(sim):
    with pytest.raises(ValueError):
        vse_hinge_loss(sim)


def test_bad_reduction_and_mask_raise():
    with pytest.raises(ValueError):
        vse_hinge_loss(SIM, reduction="none")
    with pytest.raises(ValueError):
        vse_hinge_loss(SIM, positives=torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError):
        VSEHingeLoss()(torch.randn(3, 4), torch.randn(3, 5))
