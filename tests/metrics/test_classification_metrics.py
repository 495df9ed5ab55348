"""Accuracy, macro-F1, AUROC and NLVR consistency against hand-computed values."""

import pytest
import torch

from vlfuse.data.matching import nlvr_sentence_id
from vlfuse.metrics.classification import accuracy, auroc, macro_f1, nlvr_consistency


def test_accuracy_from_labels_and_scores():
    assert accuracy([0, 1, 2, 1], [0, 2, 2, 1]) == pytest.approx(3 / 4)
    scores = torch.tensor([[2.0, 0.1], [0.3, 0.9], [0.8, 0.1]])  # arg-max 0, 1, 0
    assert accuracy(scores, [0, 0, 0]) == pytest.approx(2 / 3)


def test_macro_f1_by_hand():
    preds, target = [0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    # class 0: TP 1 (i0), FP 1 (i1), FN 1 (i5) -> 2*1 / (2 + 1 + 1) = 1/2
    # class 1: TP 2 (i2, i3), FP 0, FN 1 (i1)  -> 4 / 5
    # class 2: TP 1 (i4), FP 1 (i5), FN 0      -> 2 / 3
    # macro = (1/2 + 4/5 + 2/3) / 3 = 59/90
    assert macro_f1(preds, target) == pytest.approx(59 / 90)
    # classes 3 and 4 occur nowhere: left out of the mean, not counted as F1 = 0
    assert macro_f1(preds, target, num_classes=5) == pytest.approx(59 / 90)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        macro_f1(preds, target, num_classes=2)


def test_binary_auroc_by_hand():
    # positives {0.35, 0.8}, negatives {0.1, 0.4}: of the 4 (pos, neg) pairs, 0.35 beats 0.1 only,
    # 0.8 beats both -> 3/4
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([-2.0, 1.0, 0.5, 3.0], [0, 0, 1, 1]) == pytest.approx(0.75)  # logits: same order
    assert auroc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)                   # a tie counts one half


def test_multiclass_one_vs_rest_auroc_by_hand():
    scores = torch.tensor([[0.7, 0.2, 0.1],
                           [0.4, 0.4, 0.2],
                           [0.3, 0.6, 0.1],
                           [0.5, 0.3, 0.2],
                           [0.2, 0.2, 0.6],
                           [0.1, 0.5, 0.4]])
    target = [0, 0, 1, 1, 2, 2]
    # class 0: pos {.7 .4} vs neg {.3 .5 .2 .1}: .7 beats 4, .4 beats 3 -> 7/8
    # class 1: pos {.6 .3} vs neg {.2 .4 .2 .5}: .6 beats 4, .3 beats 2 -> 6/8
    # class 2: pos {.6 .4} vs neg {.1 .2 .1 .2}: both beat all         -> 8/8
    # macro = (7/8 + 6/8 + 1) / 3 = 7/8
    assert auroc(scores, target) == pytest.approx(7 / 8)


def test_auroc_needs_positives_and_negatives():
    with pytest.raises(ValueError, match="positives and negatives"):
        auroc([0.2, 0.9], [1, 1])
    with pytest.raises(ValueError, match="positives and negatives"):
        auroc(torch.rand(4, 3), [0, 1, 0, 1])  # class 2 never occurs
    with pytest.raises(ValueError, match="matching target"):
        auroc(torch.rand(4, 3), [0, 1, 2])


def test_nlvr_consistency_by_hand():
    preds = [1, 0, 1, 1, 1, 0]
    labels = [1, 0, 1, 1, 0, 0]
    sentences = ["A", "A", "A", "B", "B", "C"]
    # A: 3/3 right -> consistent; B: one of 2 wrong -> not; C: 1/1 right -> consistent => 2/3
    assert nlvr_consistency(preds, labels, sentences) == pytest.approx(2 / 3)
    assert nlvr_consistency(["true", "false"], ["true", "true"], ["x", "y"]) == 0.5  # any comparable labels


def test_nlvr_sentence_ids():
    # NLVR2: dev-<set>-<pair>-<sentence>; the pair varies across one sentence's image pairs
    assert nlvr_sentence_id("dev-850-0-1") == nlvr_sentence_id("dev-850-3-1") == "dev-850-1"
    assert nlvr_sentence_id("dev-850-0-0") != nlvr_sentence_id("dev-850-0-1")
    assert nlvr_sentence_id("1572-3") == "1572"  # NLVR: <sentence>-<image>
    with pytest.raises(ValueError, match="not an NLVR"):
        nlvr_sentence_id("abc")


def test_invalid_inputs():
    with pytest.raises(ValueError, match="matching target"):
        accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="no predictions"):
        accuracy([], [])
    with pytest.raises(ValueError, match="integers"):
        accuracy([0.2, 0.7], [0, 1])
    with pytest.raises(ValueError, match="lengths differ"):
        nlvr_consistency([1], [1, 0], ["a", "b"])
    with pytest.raises(ValueError, match="no predictions"):
        nlvr_consistency([], [], [])
