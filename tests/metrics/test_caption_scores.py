"""BLEU, ROUGE-L and CIDEr-D against values derived by hand (and BLEU's own paper)."""

import math

import pytest

from vlfuse.metrics.captioning import (bleu, caption_metrics, cider_d, cider_d_scores, rouge_l, rouge_l_scores,
                                       tokenize)


def test_tokenize():
    assert tokenize("A man's T-shirt, folded.") == ["a", "man", "s", "t", "shirt", "folded"]


# Papineni et al. 2002, section 2.1, Example 1.
PAPER_CANDIDATE = "It is a guide to action which ensures that the military always obeys the commands of the party."
PAPER_REFERENCES = [
    "It is a guide to action that ensures that the military will forever heed Party commands.",        # 16 words
    # 18 words:
    "It is the guiding principle which guarantees the military forces always being under the command of the Party.",
    "It is the practical guide for the army always to heed the directions of the party.",              # 16
]


def test_bleu_paper_example():
    # The paper: modified unigram precision 17/18 (only "obeys" is unmatched; "the" x3 clips at
    # reference 2's four), modified bigram precision 10/17. 18 words, closest reference 18 -> BP = 1.
    # BLEU-2 = sqrt(17/18 * 10/17) = sqrt(10/18).
    scores = bleu([PAPER_CANDIDATE], [PAPER_REFERENCES])
    assert scores["bleu_1"] == pytest.approx(17 / 18)
    assert scores["bleu_2"] == pytest.approx(math.sqrt(10 / 18))


def test_bleu_clipping_paper_example():
    # The paper's "the the the the the the the": "the" counts at most twice (reference 1) -> 2/7;
    # 7 words, references 6 and 7 long -> closest 7, BP = 1. No bigram "the the" in any reference -> 0.
    scores = bleu(["the the the the the the the"], [["The cat is on the mat.", "There is a cat on the mat."]])
    assert scores["bleu_1"] == pytest.approx(2 / 7)
    assert scores["bleu_2"] == scores["bleu_4"] == 0.0


def test_bleu_1_to_4_by_hand():
    # candidate "the cat sat on the mat" vs "the cat sat on a mat", both 6 words (BP = 1)
    #   1-grams: the(2, clipped to 1) cat sat on mat           -> 5/6
    #   2-grams: the-cat cat-sat sat-on | on-the the-mat        -> 3/5
    #   3-grams: the-cat-sat cat-sat-on | sat-on-the on-the-mat -> 2/4
    #   4-grams: the-cat-sat-on | cat-sat-on-the sat-on-the-mat -> 1/3
    # BLEU-N = geometric mean of the first N: 5/6; sqrt(1/2); (1/4)^(1/3); (1/12)^(1/4)
    scores = bleu(["the cat sat on the mat"], [["the cat sat on a mat"]])
    assert scores == pytest.approx({"bleu_1": 5 / 6, "bleu_2": math.sqrt(1 / 2),
                                    "bleu_3": (1 / 4) ** (1 / 3), "bleu_4": (1 / 12) ** (1 / 4)})


def test_bleu_brevity_penalty_uses_closest_reference():
    # 2 words; references 6 and 3 long -> closest is 3 -> BP = exp(1 - 3/2); p1 = p2 = 1; no 3-grams -> 0
    scores = bleu(["the cat"], [["the cat sat on the mat", "a cat sat"]])
    assert scores["bleu_1"] == pytest.approx(math.exp(-0.5))
    assert scores["bleu_2"] == pytest.approx(math.exp(-0.5))
    assert scores["bleu_3"] == 0.0
    # 4 words, references 3 and 5 equally close -> the shorter (3) -> no penalty (5 would give exp(-1/4))
    assert bleu(["a b c d"], [["a b c", "a b c d e"]])["bleu_1"] == 1.0


def test_bleu_is_computed_over_the_corpus():
    # n-gram counts and lengths are summed before dividing: p1 = (5 + 2) / (6 + 2) = 7/8;
    # lengths 6 + 2 = 8 vs references 6 + 3 = 9 -> BP = exp(1 - 9/8). (Averaging per-sentence
    # BLEU-1 would give (5/6 + exp(1 - 3/2)) / 2 instead.)
    scores = bleu(["the cat sat on the mat", "a dog"], [["the cat sat on a mat"], ["a dog runs"]])
    assert scores["bleu_1"] == pytest.approx(7 / 8 * math.exp(1 - 9 / 8))


def test_rouge_l_by_hand():
    # LCS("the cat sat", "the cat sat on the mat") = 3: P = 3/3, R = 3/6;
    # F = (1 + 1.44) * 1 * 0.5 / (0.5 + 1.44 * 1) = 1.22 / 1.94
    assert rouge_l(["the cat sat"], [["the cat sat on the mat"]]) == pytest.approx(1.22 / 1.94)
    # LCS("the cat sat on the mat", "the cat is on the mat") = 5 ("the cat on the mat"): P = R = 5/6 -> F = 5/6
    assert rouge_l(["the cat sat on the mat"], [["the cat is on the mat"]]) == pytest.approx(5 / 6)
    # as coco-caption, the best precision and best recall may come from different references:
    # "the cat" gives P 2/3, R 1; the long one P 1, R 1/2 -> P = R = 1 -> F = 1
    assert rouge_l(["the cat sat"], [["the cat", "the cat sat on the mat"]]) == pytest.approx(1.0)
    # the corpus score is the mean of the sentence scores
    scores = rouge_l_scores(["the cat sat", "the cat sat on the mat"],
                            [["the cat sat on the mat"], ["the cat is on the mat"]])
    assert scores == pytest.approx([1.22 / 1.94, 5 / 6])


# CIDEr-D worked examples: 2 images, every n-gram below occurs in one image's references only, so
# df = 1 and its weight is tf * (log 2 - log 1) = tf * L with L = log 2 (an n-gram of no reference
# also gets idf log 2 - log max(1, 0) = L). CIDEr-D = 10 * mean over n = 1..4 of the per-n terms.
# Image "dog ran" / ref "dog ran": n=1 {dog: L, ran: L} on both sides -> 2L^2 / (L*sqrt2)^2 = 1;
# n=2 {dog-ran: L} -> 1; no 3- or 4-grams -> 0. So 10 * (1 + 1 + 0 + 0) / 4 = 5.
def test_cider_d_perfect_two_word_caption():
    assert cider_d_scores(["cat sat", "dog ran"], [["cat sat"], ["dog ran"]]) == pytest.approx([5.0, 5.0])


def test_cider_d_clipping():
    # "cat cat" vs "cat sat": n=1 candidate {cat: 2L}, norm 2L; reference {cat: L, sat: L}, norm L*sqrt2;
    # clipped dot = min(2L, L) * L = L^2 -> L^2 / (2L * L*sqrt2) = 1 / (2*sqrt2).
    # n=2 "cat-cat" is not in the reference -> 0. Same lengths -> no penalty.
    # CIDEr-D = 10 * (1 / (2*sqrt2)) / 4 = 5 / (4*sqrt2) ~ 0.8839; corpus = mean with the 5 above.
    scores = cider_d_scores(["cat cat", "dog ran"], [["cat sat"], ["dog ran"]])
    assert scores == pytest.approx([5 / (4 * math.sqrt(2)), 5.0])
    corpus = cider_d(["cat cat", "dog ran"], [["cat sat"], ["dog ran"]])
    assert corpus == pytest.approx((5 / (4 * math.sqrt(2)) + 5) / 2)


def test_cider_d_length_penalty_and_several_references():
    # "cat" vs "cat sat": n=1 L^2 / (L * L*sqrt2) = 1/sqrt2, no bigram in the candidate;
    # lengths 1 vs 2 -> penalty exp(-1 / (2 * 6^2)) = exp(-1/72). CIDEr-D = 10 * exp(-1/72) / sqrt2 / 4.
    penalty = math.exp(-1 / 72)
    got = cider_d_scores(["cat", "dog ran"], [["cat sat"], ["dog ran"]])[0]
    assert got == pytest.approx(10 * penalty / math.sqrt(2) / 4)
    # "cat sat" against two references, averaged over them:
    #   "cat sat": n=1 -> 1, n=2 -> 1 (no penalty);  "cat": n=1 -> L^2 / (L*sqrt2 * L) = 1/sqrt2, n=2 none,
    #   penalty exp(-1/72). CIDEr-D = 10 * (2 + exp(-1/72)/sqrt2) / (4 * 2)
    got = cider_d_scores(["cat sat", "dog ran"], [["cat sat", "cat"], ["dog ran"]])[0]
    assert got == pytest.approx(10 * (2 + penalty / math.sqrt(2)) / 8)


def test_cider_d_gives_no_weight_to_words_every_image_shares():
    # "a" is in both images' references: idf = log 2 - log 2 = 0. "a dog" for the cat image matches
    # only "a", so CIDEr-D is 0 while BLEU-1 is 1/2.
    cands, refs = ["a dog", "a dog"], [["a cat"], ["a dog"]]
    assert cider_d_scores(cands, refs) == pytest.approx([0.0, 5.0])
    assert bleu(cands[:1], refs[:1])["bleu_1"] == pytest.approx(0.5)


def test_degenerate_inputs():
    same = caption_metrics(["a man rides a horse"], [["A man rides a horse."]])
    assert same["bleu_1"] == same["bleu_4"] == pytest.approx(1.0)
    assert same["rouge_l"] == pytest.approx(1.0)
    assert same["cider_d"] == 0.0  # one image: every idf is log 1 - log 1 = 0 (CIDEr needs a corpus)
    empty = caption_metrics(["", "dog ran"], [["cat sat"], ["dog ran"]])
    assert empty["rouge_l"] == pytest.approx(0.5)                    # (0 + 1) / 2
    assert cider_d_scores(["", "dog ran"], [["cat sat"], ["dog ran"]]) == pytest.approx([0.0, 5.0])
    assert bleu([""], [["a cat"]]) == {"bleu_1": 0.0, "bleu_2": 0.0, "bleu_3": 0.0, "bleu_4": 0.0}
    # an empty candidate adds no n-grams but its reference length: p1 = 2/2 ("dog ran"), p2 = 1/1,
    # lengths 0 + 2 vs references 2 + 2 -> BP = exp(1 - 4/2)
    assert empty["bleu_1"] == empty["bleu_2"] == pytest.approx(math.exp(-1))


def test_invalid_inputs():
    with pytest.raises(ValueError, match="2 candidates but 1"):
        bleu(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="no captions"):
        rouge_l([], [])
    with pytest.raises(ValueError, match="non-empty list"):
        cider_d(["a cat"], ["a cat"])  # a string where a list of references belongs
    with pytest.raises(ValueError, match="non-empty list"):
        bleu(["a cat"], [[]])
    with pytest.raises(ValueError, match="no words"):
        bleu(["a cat"], [["?!"]])
    with pytest.raises(ValueError, match="not one string"):
        bleu("a cat", [["a cat"]])
