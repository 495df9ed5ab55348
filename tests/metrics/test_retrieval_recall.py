"""Recall@K, median and mean rank for image<->text retrieval with several captions per image."""

import numpy as np
import pytest
import torch

from vlfuse.metrics.retrieval import retrieval_metrics, retrieval_ranks

# 3 images x 6 captions; captions 0,1 belong to image 0, 2,3 to image 1, 4,5 to image 2.
OWNER = [0, 0, 1, 1, 2, 2]
SIMS = torch.tensor([
    #  t0    t1    t2    t3    t4    t5
    [0.90, 0.10, 0.80, 0.20, 0.30, 0.00],  # image 0
    [0.70, 0.60, 0.50, 0.40, 0.10, 0.20],  # image 1
    [0.30, 0.20, 0.10, 0.90, 0.40, 0.35],  # image 2
])


def test_ranks_by_hand():
    i2t, t2i = retrieval_ranks(SIMS, OWNER)
    # image -> text: rank of the best-placed own caption
    #   image 0: own best t0 = 0.90, nothing higher                         -> 1
    #   image 1: own best t2 = 0.50, wrong t0 0.70 and t1 0.60 are higher   -> 3
    #   image 2: own best t4 = 0.40, wrong t3 0.90 is higher                 -> 2
    assert i2t.tolist() == [1, 3, 2]
    # text -> image: rank of the caption's image within its column
    #   t0 [.9 .7 .3] own .9 -> 1;  t1 [.1 .6 .2] own .1 -> 3;  t2 [.8 .5 .1] own .5 -> 2
    #   t3 [.2 .4 .9] own .4 -> 2;  t4 [.3 .1 .4] own .4 -> 1;  t5 [.0 .2 .35] own .35 -> 1
    assert t2i.tolist() == [1, 3, 2, 2, 1, 1]


def test_metrics_by_hand():
    m = retrieval_metrics(SIMS, OWNER, ks=(1, 2, 3))
    # i2t ranks [1, 3, 2]: R@1 1/3, R@2 2/3, R@3 1; median 2; mean 6/3 = 2
    assert (m["i2t_r1"], m["i2t_r2"], m["i2t_r3"]) == pytest.approx((1 / 3, 2 / 3, 1.0))
    assert m["i2t_median_rank"] == 2 and m["i2t_mean_rank"] == pytest.approx(2.0)
    # t2i ranks [1, 3, 2, 2, 1, 1]: R@1 3/6, R@2 5/6, R@3 1; sorted [1 1 1 2 2 3], median (1+2)/2 = 1.5
    # -> floor 1 (VSE++ convention); mean 10/6
    assert (m["t2i_r1"], m["t2i_r2"], m["t2i_r3"]) == pytest.approx((0.5, 5 / 6, 1.0))
    assert m["t2i_median_rank"] == 1 and m["t2i_mean_rank"] == pytest.approx(10 / 6)
    # r_mean = (1/3 + 2/3 + 1 + 1/2 + 5/6 + 1) / 6 = (13/3) / 6 = 13/18
    assert m["r_mean"] == pytest.approx(13 / 18)


def test_any_caption_counts_for_an_image_query():
    # image 1's captions sit at positions 3 and 4 of its row: a hit at K=3 through the first one
    assert retrieval_metrics(SIMS, OWNER, ks=(3,))["i2t_r3"] == 1.0


def test_numpy_input_and_caption_order_do_not_matter():
    perm = [5, 2, 0, 4, 1, 3]
    i2t, t2i = retrieval_ranks(SIMS.numpy()[:, perm], np.array(OWNER)[perm])
    assert i2t.tolist() == [1, 3, 2]
    assert t2i.tolist() == [[1, 3, 2, 2, 1, 1][p] for p in perm]


def test_ties_count_against_the_model():
    # a wrong caption scoring exactly the best own caption ranks ahead of it
    sims = torch.tensor([[0.5, 0.1, 0.5, 0.0, 0.0, 0.0],
                         [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
                         [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
    assert retrieval_ranks(sims, OWNER)[0].tolist() == [2, 1, 1]
    # constant scores: every one of the 4 wrong captions ties -> rank 5; every image ties -> rank 3
    i2t, t2i = retrieval_ranks(torch.zeros(3, 6), OWNER)
    assert i2t.tolist() == [5, 5, 5] and t2i.tolist() == [3] * 6


def test_invalid_inputs():
    with pytest.raises(ValueError, match="exceeds the 3 candidate images"):
        retrieval_metrics(SIMS, OWNER)  # default ks (1, 5, 10) on 3 images
    with pytest.raises(ValueError, match="one entry per text"):
        retrieval_ranks(SIMS, OWNER[:5])
    with pytest.raises(ValueError, match="without any caption"):
        retrieval_ranks(SIMS, [0, 0, 0, 2, 2, 2])  # image 1 owns nothing
    with pytest.raises(ValueError, match="outside"):
        retrieval_ranks(SIMS, [0, 0, 1, 1, 2, 3])
    with pytest.raises(ValueError, match="integer"):
        retrieval_ranks(SIMS, [0.0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="non-empty"):
        retrieval_ranks(torch.zeros(0, 0), [])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_ranks(SIMS.masked_fill(SIMS > 0.85, float("nan")), OWNER)
    with pytest.raises(ValueError, match="positive integers"):
        retrieval_metrics(SIMS, OWNER, ks=(0,))
