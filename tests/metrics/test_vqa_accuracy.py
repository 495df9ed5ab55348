"""VQA accuracy: official leave-one-annotator-out score, normalisation rules, soft score, exact match."""

from itertools import combinations

import pytest
import torch

from vlfuse.metrics.vqa import (CONTRACTIONS, answer_soft_scores, exact_match, normalize_vqa_answer, vqa_accuracy,
                                vqa_evaluate, vqa_soft_accuracy, vqa_soft_score)


def ten(matching: int, answer: str = "red", other: str = "blue") -> list[str]:
    return [answer] * matching + [other] * (10 - matching)


def test_two_of_ten_matching_gives_0_6():
    # 10 answers, 2 say "red". Leave out each annotator in turn (10 subsets of 9):
    #   leaving out one of the 2 "red" annotators (2 subsets): 1 match left -> min(1/3, 1) = 1/3
    #   leaving out one of the 8 others (8 subsets):          2 matches    -> min(2/3, 1) = 2/3
    #   acc = (2 * 1/3 + 8 * 2/3) / 10 = (2/3 + 16/3) / 10 = 6 / 10 = 0.6
    assert vqa_accuracy("red", ten(2)) == pytest.approx(0.6)


@pytest.mark.parametrize("matching, expected", [
    (0, 0.0),   # nobody agrees
    (1, 0.3),   # (1 * 0/3 + 9 * 1/3) / 10 = 3/10
    (3, 0.9),   # (3 * 2/3 + 7 * 1) / 10 = (2 + 7) / 10
    (4, 1.0),   # (4 * min(3/3, 1) + 6 * 1) / 10
    (10, 1.0),
])
def test_leave_one_out_table(matching, expected):
    assert vqa_accuracy("red", ten(matching)) == pytest.approx(expected)
    # and by brute force over the 10-choose-9 subsets, independent of the closed form
    answers = ten(matching)
    subsets = list(combinations(answers, 9))
    assert len(subsets) == 10
    assert vqa_accuracy("red", answers) == pytest.approx(sum(min(s.count("red") / 3, 1) for s in subsets) / 10)


@pytest.mark.parametrize("raw, normalised", [
    ("Two", "2"), ("none", "0"), ("TEN dogs", "10 dogs"),          # number words -> digits, lowercase
    ("the dog", "dog"), ("a man on an elephant", "man on elephant"),  # articles dropped
    ("dont", "don't"), ("isnt", "isn't"),                           # contractions table
    ("Ive", "ive"),   # the table's key is "Ive", but words are lowercased first: never matches (official quirk)
    ("yes.", "yes"), ("2.5", "2.5"), ("it is 3.", "it is 3"),       # a period goes unless a digit follows
    ("black/white", "black white"),    # mark not touching a space -> becomes a space
    ("black / white", "black white"),  # mark touching a space -> deleted (the double space collapses)
    ("red,white", "red white"), ("red, white", "red white"),
    ("1,000", "1000"),                 # a digit,digit comma anywhere -> every mark deleted
    ("man's hat", "man's hat"), ("10:30", "10:30"),  # ' and : are not in the punctuation list
    ("  hello\tworld\n", "hello world"),
])
def test_normalisation_rules(raw, normalised):
    assert normalize_vqa_answer(raw) == normalised


def test_full_contractions_table():
    assert len(CONTRACTIONS) == 120  # the official script's whole table
    assert CONTRACTIONS["wouldnt've"] == "wouldn't've" and CONTRACTIONS["yall"] == "y'all"


def test_prediction_normalised_before_matching():
    assert vqa_accuracy("Two.", ten(3, "2", "3")) == pytest.approx(0.9)


def test_references_treated_as_the_official_script_by_default():
    # Unanimous raw answers are left untouched by the script: "Two" never equals the prediction "2".
    assert vqa_accuracy("two", ["Two"] * 10) == 0.0
    assert vqa_accuracy("two", ["Two"] * 10, normalize_references=True) == 1.0
    # Disagreeing answers get only the punctuation step: "dog!" -> "dog " (the ! becomes a space), no match.
    answers = ["dog!"] * 3 + ["cat"] * 7
    assert vqa_accuracy("dog", answers) == 0.0
    assert vqa_accuracy("dog", answers, normalize_references=True) == pytest.approx(0.9)


def test_soft_score_and_targets():
    assert vqa_soft_score("red", ten(2)) == pytest.approx(2 / 3)  # min(2/3, 1), no leave-one-out
    assert vqa_soft_score("red", ten(4)) == 1.0
    assert vqa_soft_score("Red!", ten(1)) == pytest.approx(1 / 3)
    assert answer_soft_scores(["Yes", "yes", "no"]) == pytest.approx({"yes": 2 / 3, "no": 1 / 3})


def test_soft_accuracy_from_logits():
    logits = torch.tensor([[0.1, 2.0, 0.3], [1.0, 0.0, 0.0]])     # arg-max: class 1, class 0
    targets = torch.tensor([[0.0, 0.6, 1.0], [0.3, 0.0, 0.0]])
    assert vqa_soft_accuracy(logits, targets).item() == pytest.approx((0.6 + 0.3) / 2)
    with pytest.raises(ValueError, match="batch, classes"):
        vqa_soft_accuracy(logits, targets[:, :2])
    with pytest.raises(ValueError, match="empty"):
        vqa_soft_accuracy(logits[:0], targets[:0])


def test_exact_match():
    assert exact_match(["Two", "cat"], ["2", "dog"]) == 0.5    # "two" -> "2" matches; cat != dog
    assert exact_match(["Two", "cat"], ["2", "dog"], normalizer=None) == 0.0


def test_evaluate_per_answer_type():
    preds = ["yes", "red", "no"]
    answers = [["yes"] * 10, ten(2), ["yes"] * 10]
    types = ["yes/no", "other", "yes/no"]
    out = vqa_evaluate(preds, answers, types)
    # scores 1, 0.6, 0 -> overall 1.6 / 3; yes/no (1 + 0) / 2; other 0.6
    assert out["scores"] == pytest.approx([1.0, 0.6, 0.0])
    assert out["overall"] == pytest.approx(1.6 / 3)
    assert out["per_answer_type"] == pytest.approx({"other": 0.6, "yes/no": 0.5})
    assert "per_answer_type" not in vqa_evaluate(preds, answers)


def test_invalid_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        vqa_accuracy("yes", ["yes"])
    with pytest.raises(ValueError, match="at least 2"):
        vqa_accuracy("yes", [])
    with pytest.raises(ValueError, match="not one string"):
        vqa_accuracy("yes", "yes yes")
    with pytest.raises(ValueError, match="2 predictions but 1"):
        vqa_evaluate(["a", "b"], [["a", "a"]])
    with pytest.raises(ValueError, match="answer types"):
        vqa_evaluate(["a"], [["a", "a"]], ["x", "y"])
    with pytest.raises(ValueError, match="no predictions"):
        vqa_evaluate([], [])
    with pytest.raises(ValueError, match="1 predictions but 2"):
        exact_match(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no predictions"):
        exact_match([], [])
