"""UNITER masked region modelling: which regions are masked, and losses that count only them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlfuse.losses.mrm import choose_masked_regions, mask_regions, mrc_kl_loss, mrfr_loss


def _region_mask(b=400, n=36, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, n + 1, (b,), generator=g)
    return torch.arange(n)[None, :] < counts[:, None]


def test_choice_respects_mask_and_rate():
    mask = _region_mask()
    chosen = choose_masked_regions(mask, 0.15, at_least_one=False, generator=torch.Generator().manual_seed(1))
    assert not (chosen & ~mask).any()
    assert chosen.sum().item() / mask.sum().item() == pytest.approx(0.15, abs=0.01)


def test_at_least_one_real_region_per_image():
    mask = _region_mask(b=64, n=5)
    mask[3] = False  # an image with no regions at all stays unmasked
    chosen = choose_masked_regions(mask, 0.0, generator=torch.Generator().manual_seed(2))
    assert not (chosen & ~mask).any()
    assert chosen.sum(1).tolist() == [1 if row.any() else 0 for row in mask]


def test_seeded_choice_repeats():
    mask = _region_mask(8, 10)
    a = choose_masked_regions(mask, generator=torch.Generator().manual_seed(3))
    b = choose_masked_regions(mask, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_mask_regions_zeroes_only_chosen():
    features = torch.ones(2, 3, 4)
    region_mask = torch.tensor([[True, False, False], [False, False, True]])
    out = mask_regions(features, region_mask)
    assert out[region_mask].abs().sum() == 0 and (out[~region_mask] == 1).all()


def test_mrfr_counts_only_masked_regions():
    g = torch.Generator().manual_seed(4)
    predicted, target = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    region_mask = torch.tensor([[True, False, False], [False, False, True]])
    expected = ((predicted[0, 0] - target[0, 0]).pow(2).sum() + (predicted[1, 2] - target[1, 2]).pow(2).sum()) / 8
    assert mrfr_loss(predicted, target, region_mask).item() == pytest.approx(expected.item(), rel=1e-6)
    predicted[0, 1] += 50  # unmasked: no effect
    assert mrfr_loss(predicted, target, region_mask).item() == pytest.approx(expected.item(), rel=1e-6)
    empty = mrfr_loss(predicted.requires_grad_(), target, torch.zeros(2, 3, dtype=torch.bool))
    assert empty.item() == 0.0
    empty.backward()


def test_mrc_kl_counts_masked_regions_with_labels():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 5, generator=g)
    soft = torch.softmax(torch.randn(2, 3, 5, generator=g), -1)
    region_mask = torch.tensor([[True, True, False], [False, False, True]])
    label_mask = torch.tensor([[True, False, True], [True, True, True]])  # (0, 1) has no label

    def kl(p, logit):
        return (p * (p.log() - F.log_softmax(logit, -1))).sum()

    expected = (kl(soft[0, 0], logits[0, 0]) + kl(soft[1, 2], logits[1, 2])) / 2
    assert mrc_kl_loss(logits, soft, region_mask, label_mask).item() == pytest.approx(expected.item(), rel=1e-5)
    assert mrc_kl_loss(soft.log(), soft, region_mask).item() == pytest.approx(0.0, abs=1e-6)
    # One-hot labels with zeros: finite.
    onehot = F.one_hot(torch.tensor([[1, 2, 3], [0, 4, 1]]), 5).float()
    assert torch.isfinite(mrc_kl_loss(logits, onehot, region_mask))
    assert mrc_kl_loss(logits, soft, region_mask, torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0


def test_bad_region_inputs_raise():
    with pytest.raises(ValueError):
        mrfr_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError):
        mrfr_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError):
        mrc_kl_loss(torch.zeros(0, 3, 4), torch.zeros(0, 3, 4), torch.zeros(0, 3, dtype=torch.bool))
    with pytest.raises(ValueError):
        choose_masked_regions(torch.ones(2, 3, dtype=torch.bool), probability=-0.1)
    with pytest.raises(ValueError):
        mask_regions(torch.zeros(2, 3, 4), torch.ones(3, 2, dtype=torch.bool))
