"""BERT masking statistics, specials and padding untouched, seedability; the MLM loss counts only
masked positions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlfuse.losses.masking import IGNORE_INDEX, mask_tokens
from vlfuse.losses.mlm import mlm_loss

PAD, CLS, SEP, MASK, VOCAB = 0, 1, 2, 3, 50


def _batch(b=256, length=64, seed=0):
    """[CLS] words [SEP] [PAD]...: ordinary ids in [4, VOCAB), lengths vary."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (b, length), generator=g)
    lengths = torch.randint(3, length + 1, (b,), generator=g)
    positions = torch.arange(length)[None, :]
    real = positions < lengths[:, None]
    ids[:, 0] = CLS
    ids[positions == (lengths[:, None] - 1)] = SEP
    ids[~real] = PAD
    return ids, real


def _mask(ids, real, seed=1, **kw):
    return mask_tokens(ids, MASK, VOCAB, attention_mask=real, special_ids=[PAD, CLS, SEP],
                       generator=torch.Generator().manual_seed(seed), **kw)


def test_statistics_on_a_big_batch():
    ids, real = _batch(b=1024)  # ~5000 chosen tokens: the tolerances below are > 3 standard deviations
    masked, labels = _mask(ids, real)
    eligible = real & (ids != CLS) & (ids != SEP)
    chosen = labels != IGNORE_INDEX
    n = chosen.sum().item()
    assert n / eligible.sum().item() == pytest.approx(0.15, abs=0.01)
    as_mask = (masked == MASK) & chosen
    unchanged = (masked == ids) & chosen
    random = chosen & ~as_mask & ~unchanged  # a random draw can equal the original: counted as unchanged
    assert as_mask.sum().item() / n == pytest.approx(0.8, abs=0.02)
    assert random.sum().item() / n == pytest.approx(0.1 * (1 - 1 / 46), abs=0.02)  # 46 ordinary ids
    assert unchanged.sum().item() / n == pytest.approx(0.1 + 0.1 / 46, abs=0.02)
    assert torch.equal(labels[chosen], ids[chosen])


def test_specials_and_padding_untouched_and_random_ids_are_ordinary():
    ids, real = _batch()
    masked, labels = _mask(ids, real, probability=0.9)
    special = (ids == CLS) | (ids == SEP) | ~real
    assert torch.equal(masked[special], ids[special])
    assert (labels[special] == IGNORE_INDEX).all()
    changed = (masked != ids) & (masked != MASK)
    assert changed.any() and (masked[changed] >= 4).all() and (masked[changed] < VOCAB).all()
    assert (masked[labels == IGNORE_INDEX] == ids[labels == IGNORE_INDEX]).all()


def test_seeded_masking_repeats():
    ids, real = _batch(8, 16)
    a, b = _mask(ids, real, seed=5), _mask(ids, real, seed=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], _mask(ids, real, seed=6)[1])


def test_bad_masking_inputs_raise():
    ids, real = _batch(4, 8)
    with pytest.raises(ValueError):
        mask_tokens(ids, MASK, VOCAB, attention_mask=real[:, :4])
    with pytest.raises(ValueError):
        mask_tokens(ids[:0], MASK, VOCAB)
    with pytest.raises(ValueError):
        mask_tokens(ids, MASK, VOCAB, probability=1.5)
    with pytest.raises(ValueError):
        mask_tokens(ids, MASK, VOCAB, mask_ratio=0.8, random_ratio=0.3)


def test_mlm_loss_counts_only_masked_positions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1], labels[1, 4] = 3, 6
    expected = -(F.log_softmax(logits[0, 1], -1)[3] + F.log_softmax(logits[1, 4], -1)[6]) / 2
    assert mlm_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    # What is predicted at unmasked positions does not matter.
    changed = logits.clone()
    changed[0, 0] += 100
    assert mlm_loss(changed, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    # Only the masked rows may be passed, too.
    kept = labels != IGNORE_INDEX
    assert mlm_loss(logits[kept], labels[kept]).item() == pytest.approx(expected.item(), rel=1e-6)


def test_mlm_loss_without_masked_tokens_is_zero_not_nan():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    loss = mlm_loss(logits, torch.full((2, 3), IGNORE_INDEX))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError):
        mlm_loss(torch.randn(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
