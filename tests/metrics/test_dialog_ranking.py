"""VisDial answer ranking: MRR, R@K, mean rank."""

import pytest
import torch

from vlfuse.metrics.ranking import answer_ranks, ranking_metrics

SCORES = torch.tensor([
    [0.1, 0.9, 0.3, 0.2, 0.0],  # gt 1 (0.9): highest                          -> rank 1
    [0.5, 0.4, 0.8, 0.1, 0.6],  # gt 1 (0.4): 0.5, 0.8, 0.6 above              -> rank 4
    [0.2, 0.2, 0.2, 0.9, 0.1],  # gt 0 (0.2): 0.9 above, two wrong ties count  -> rank 4
])
GT = torch.tensor([1, 1, 0])


def test_small_example_by_hand():
    assert answer_ranks(SCORES, GT).tolist() == [1, 4, 4]
    m = ranking_metrics(SCORES, GT, ks=(1, 5))
    # MRR = (1 + 1/4 + 1/4) / 3 = 1/2; R@1 = 1/3; R@5 = 3/3; mean rank = 9/3 = 3
    assert m == pytest.approx({"mrr": 0.5, "r1": 1 / 3, "r5": 1.0, "mean_rank": 3.0})


def test_hundred_candidates():
    # candidate j scores -j, so its rank is j + 1; gt indices 0, 4, 9, 10, 99 -> ranks 1, 5, 10, 11, 100
    scores = -torch.arange(100.0).repeat(5, 1)
    gt = torch.tensor([0, 4, 9, 10, 99])
    m = ranking_metrics(scores, gt)
    assert m["mrr"] == pytest.approx((1 + 1 / 5 + 1 / 10 + 1 / 11 + 1 / 100) / 5)
    assert (m["r1"], m["r5"], m["r10"]) == pytest.approx((1 / 5, 2 / 5, 3 / 5))
    assert m["mean_rank"] == pytest.approx((1 + 5 + 10 + 11 + 100) / 5)  # 25.4


def test_leading_dimensions():
    # [dialogues=1, rounds=3, candidates=5] gives the same as the flat [3, 5]
    assert ranking_metrics(SCORES[None], GT[None], ks=(1,)) == ranking_metrics(SCORES, GT, ks=(1,))


def test_invalid_inputs():
    with pytest.raises(ValueError, match="exceeds the 5 candidates"):
        ranking_metrics(SCORES, GT)  # default ks (1, 5, 10)
    with pytest.raises(ValueError, match="must match"):
        answer_ranks(SCORES, GT[:2])
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        answer_ranks(SCORES, torch.tensor([1, 1, 5]))
    with pytest.raises(ValueError, match="integer"):
        answer_ranks(SCORES, torch.tensor([1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="no questions"):
        answer_ranks(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        answer_ranks(SCORES.masked_fill(SCORES > 0.85, float("nan")), GT)
    with pytest.raises(ValueError, match="positive integers"):
        ranking_metrics(SCORES, GT, ks=())
