"""Image-text matching: hard-negative sampling never returns a positive, follows the similarity,
is seedable, and becomes the argmax as temperature -> 0; the 3B pairs and the matching loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlfuse.losses.itm import itm_loss, itm_pairs, sample_hard_negatives


def _sim(b=6, seed=0):
    return torch.randn(b, b, generator=torch.Generator().manual_seed(seed))


def test_negatives_are_never_positive():
    sim = _sim(6) + 5 * torch.eye(6)  # positives are the most similar: the sampler must still skip them
    positives = torch.zeros(6, 6, dtype=torch.bool)
    positives[0, 3] = positives[4, 1] = True
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        text_for_image, image_for_text = sample_hard_negatives(sim, positives, temperature=2.0, generator=g)
        images = torch.arange(6)
        assert not (text_for_image == images).any() and not (image_for_text == images).any()
        assert not positives[images, text_for_image].any()
        assert not positives[image_for_text, images].any()


def test_zero_and_tiny_temperature_pick_the_hardest_negative():
    sim = _sim(5, seed=2)
    masked = sim.masked_fill(torch.eye(5, dtype=torch.bool), float("-inf"))
    for temperature in (0.0, 1e-6):
        text_for_image, image_for_text = sample_hard_negatives(sim, temperature=temperature,
                                                               generator=torch.Generator().manual_seed(0))
        assert torch.equal(text_for_image, masked.argmax(1))
        assert torch.equal(image_for_text, masked.argmax(0))


def test_sampling_follows_softmax_and_is_seedable():
    sim = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    draws = [sample_hard_negatives(sim, generator=torch.Generator().manual_seed(s))[0][0].item() for s in range(400)]
    share = draws.count(1) / len(draws)  # p = e^2 / (e^2 + 1) ~ 0.88
    assert share == pytest.approx(torch.tensor(2.0).exp().item() / (torch.tensor(2.0).exp().item() + 1), abs=0.06)
    first = sample_hard_negatives(_sim(), generator=torch.Generator().manual_seed(7))
    again = sample_hard_negatives(_sim(), generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_no_gradient_flows_into_the_similarity():
    sim = _sim().requires_grad_()
    text_for_image, _ = sample_hard_negatives(sim)
    assert not text_for_image.requires_grad


def test_batch_without_negatives_raises():
    with pytest.raises(ValueError, match="negative"):
        sample_hard_negatives(torch.zeros(1, 1))
    with pytest.raises(ValueError, match="negative"):
        sample_hard_negatives(torch.zeros(3, 3), positives=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError):
        sample_hard_negatives(torch.zeros(2, 3))
    with pytest.raises(ValueError):
        sample_hard_negatives(torch.zeros(3, 3), temperature=-1.0)


def test_pairs_and_labels():
    image_index, text_index, labels = itm_pairs(torch.tensor([1, 2, 0]), torch.tensor([2, 0, 1]))
    assert image_index.tolist() == [0, 1, 2, 0, 1, 2, 2, 0, 1]
    assert text_index.tolist() == [0, 1, 2, 1, 2, 0, 0, 1, 2]
    assert labels.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError):
        itm_pairs(torch.tensor([1, 0]), torch.tensor([1, 0, 2]))


def test_itm_loss_two_logits_and_one_logit():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    labels = torch.tensor([1, 0])
    expected = -(F.log_softmax(logits, -1)[0, 1] + F.log_softmax(logits, -1)[1, 0]) / 2
    assert itm_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    single = torch.tensor([2.0, -1.0])
    expected = -(F.logsigmoid(single[0]) + F.logsigmoid(-single[1])) / 2
    assert itm_loss(single, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    for bad in [(torch.zeros(2, 3), labels), (logits, torch.tensor([1])), (torch.zeros(0, 2), torch.zeros(0))]:
        with pytest.raises(ValueError):
            itm_loss(*bad)
