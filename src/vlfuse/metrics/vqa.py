"""VQA accuracy: the official VQA v2 (EvalAI) score, a fast soft score for training, exact match.

Official accuracy (Antol et al. 2015, "VQA: Visual Question Answering"; Goyal et al. 2017, VQA v2;
the evaluation script of github.com/GT-Vision-Lab/VQA that EvalAI runs). With n human answers
a_1..a_n (n = 10 in VQA v2) and a normalised prediction p, every annotator is left out in turn
and the other n-1 answers vote:

    acc(p) = 1/n * sum_j min(1, #{i != j : a_i == p} / 3)

If m of the n answers equal p, the m left-out matching annotators see m-1 votes and the others m,
so acc = (m * min(1, (m-1)/3) + (n-m) * min(1, m/3)) / n. For n = 10: m = 0, 1, 2, 3, >=4 give
0, 0.3, 0.6, 0.9, 1.

Answer normalisation follows the official script step by step (newlines and tabs to spaces, strip,
then punctuation, then lowercase / number words / articles / contractions); see
`normalize_vqa_answer`. The full contractions table of the script is kept, quirks included.

How references are treated, by default exactly as the official script: it normalises the
*prediction* fully, but the human answers only get the punctuation step, and only when the
annotators disagree (the released VQA v2 annotations were normalised when the dataset was built).
On custom data whose references are raw ("Two", "the dog"), pass `normalize_references=True` to
normalise them fully, or "two" vs "Two" never matches.

Fast soft score (MMF/bottom-up-attention style, for training and quick validation): min(1, m/3)
over all n answers, no leave-one-out, so it is slightly higher than the official score
(m = 1, 2, 3 give 1/3, 2/3, 1 instead of 0.3, 0.6, 0.9). `vqa_soft_accuracy` takes logits and
per-class target scores and averages the target score of the arg-max class.

Scores are fractions in [0, 1] (EvalAI prints 100x, rounded to 2 decimals).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Callable, Sequence

# The official script's table, verbatim in content (written here as "key value" pairs). Its quirks
# are kept for exact scores: keys such as "Im" and "Ive" never match (words are lowercased first),
# and "somebody'd" maps to "somebodyd".
_CONTRACTION_PAIRS = """
aint ain't|arent aren't|cant can't|couldve could've|couldnt couldn't|couldn'tve couldn't've
couldnt've couldn't've|didnt didn't|doesnt doesn't|dont don't|hadnt hadn't|hadnt've hadn't've
hadn'tve hadn't've|hasnt hasn't|havent haven't|hed he'd|hed've he'd've|he'dve he'd've|hes he's
howd how'd|howll how'll|hows how's|Id've I'd've|I'dve I'd've|Im I'm|Ive I've|isnt isn't|itd it'd
itd've it'd've|it'dve it'd've|itll it'll|let's let's|maam ma'am|mightnt mightn't
mightnt've mightn't've|mightn'tve mightn't've|mightve might've|mustnt mustn't|mustve must've
neednt needn't|notve not've|oclock o'clock|oughtnt oughtn't|ow's'at 'ow's'at|'ows'at 'ow's'at
'ow'sat 'ow's'at|shant shan't|shed've she'd've|she'dve she'd've|she's she's|shouldve should've
shouldnt shouldn't|shouldnt've shouldn't've|shouldn'tve shouldn't've|somebody'd somebodyd
somebodyd've somebody'd've|somebody'dve somebody'd've|somebodyll somebody'll|somebodys somebody's
someoned someone'd|someoned've someone'd've|someone'dve someone'd've|someonell someone'll
someones someone's|somethingd something'd|somethingd've something'd've
something'dve something'd've|somethingll something'll|thats that's|thered there'd
thered've there'd've|there'dve there'd've|therere there're|theres there's|theyd they'd
theyd've they'd've|they'dve they'd've|theyll they'll|theyre they're|theyve they've|twas 'twas
wasnt wasn't|wed've we'd've|we'dve we'd've|weve we've|werent weren't|whatll what'll|whatre what're
whats what's|whatve what've|whens when's|whered where'd|wheres where's|whereve where've|whod who'd
whod've who'd've|who'dve who'd've|wholl who'll|whos who's|whove who've|whyll why'll|whyre why're
whys why's|wont won't|wouldve would've|wouldnt wouldn't|wouldnt've wouldn't've
wouldn'tve wouldn't've|yall y'all|yall'll y'all'll|y'allll y'all'll|yall'd've y'all'd've
y'alld've y'all'd've|y'all'dve y'all'd've|youd you'd|youd've you'd've|you'dve you'd've|youll you'll
youre you're|youve you've
"""
CONTRACTIONS: dict[str, str] = dict(pair.split(" ") for pair in _CONTRACTION_PAIRS.replace("\n", "|").split("|")
                                    if pair)

NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'  # the script's 21 marks; ' . : are not among them
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")


def _process_punctuation(text: str) -> str:
    # Each mark is judged on the *original* text: one touching a space, or any mark at all when the
    # text holds a digit,digit comma ("1,000"), is deleted; otherwise it becomes a space, so
    # "black/white" -> "black white" but "black / white" -> "black  white" and "1,000" -> "1000".
    delete = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        out = out.replace(mark, "" if delete or mark + " " in text or " " + mark in text else " ")
    # The script's pattern "(?!<=\d)(\.)(?!\d)" has a mistyped look-behind that never applies, so any
    # period not followed by a digit goes ("2.5" stays, "3." -> "3"). It also passes re.UNICODE (= 32)
    # as the `count` argument, so at most 32 periods go; kept for exactness.
    return _PERIOD.sub("", out, count=32)


def _process_digit_article(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_vqa_answer(answer: str) -> str:
    """The official VQA normalisation: "Two dogs!" -> "2 dogs", "the Red/White" -> "red white"."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(text))


def _check_answers(answers: Sequence[str], minimum: int) -> None:
    if isinstance(answers, str):
        raise ValueError("answers must be a list of human answers, not one string")
    if len(answers) < minimum:
        raise ValueError(f"need at least {minimum} human answers, got {len(answers)}"
                         + ("; use exact_match for single-answer data" if minimum > 1 else ""))


def _leave_one_out(matches: int, n: int) -> float:
    # Closed form of the mean over the n leave-one-annotator-out subsets (see the module docstring).
    return (matches * min(1.0, (matches - 1) / 3) + (n - matches) * min(1.0, matches / 3)) / n


def vqa_accuracy(prediction: str, answers: Sequence[str], *, normalize_references: bool = False) -> float:
    """Official VQA accuracy of one prediction against n >= 2 human answers (see the module docstring)."""
    _check_answers(answers, 2)
    pred = normalize_vqa_answer(prediction)
    if normalize_references:
        refs = [normalize_vqa_answer(a) for a in answers]
    elif len(set(answers)) > 1:
        refs = [_process_punctuation(a) for a in answers]  # the official script's treatment
    else:
        refs = list(answers)
    return _leave_one_out(sum(r == pred for r in refs), len(refs))


def vqa_soft_score(prediction: str, answers: Sequence[str]) -> float:
    """Fast soft score min(1, #matches / 3) over all answers, both sides fully normalised."""
    _check_answers(answers, 1)
    pred = normalize_vqa_answer(prediction)
    return min(1.0, sum(normalize_vqa_answer(a) == pred for a in answers) / 3)


def answer_soft_scores(answers: Sequence[str]) -> dict[str, float]:
    """Soft training targets {normalised answer: min(1, count / 3)}: ["Yes", "yes", "no"] -> {"yes": 2/3, "no": 1/3}."""
    _check_answers(answers, 1)
    counts = Counter(normalize_vqa_answer(a) for a in answers)
    return {a: min(1.0, c / 3) for a, c in counts.items()}


def vqa_soft_accuracy(logits, target_scores):
    """Mean target score of the arg-max class: logits [B, C], target_scores [B, C] -> 0-d tensor.

    The MMF-style batch accuracy: with targets from `answer_soft_scores` it is the mean fast soft
    score; with official leave-one-out targets it is the official accuracy of in-vocabulary answers.
    """
    import torch  # here, so that the string metrics above load without torch

    if logits.ndim != 2 or logits.shape != target_scores.shape:
        raise ValueError(f"logits and target_scores must both be [batch, classes]; got "
                         f"{tuple(logits.shape)} and {tuple(target_scores.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("empty batch")
    picked = logits.argmax(dim=1, keepdim=True)
    return torch.gather(target_scores, 1, picked).float().mean()


def exact_match(predictions: Sequence[str], references: Sequence[str],
                normalizer: Callable[[str], str] | None = normalize_vqa_answer) -> float:
    """Fraction of predictions equal to their single reference (GQA-style), after `normalizer` (None: raw)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    norm = normalizer or (lambda s: s)
    return sum(norm(p) == norm(r) for p, r in zip(predictions, references)) / len(predictions)


def vqa_evaluate(predictions: Sequence[str], answers: Sequence[Sequence[str]],
                 answer_types: Sequence[str] | None = None, *, normalize_references: bool = False) -> dict:
    """Official accuracy over a set: {"overall", "per_answer_type" (if types are given), "scores"}.

    Per-type accuracy is the mean over that type's questions ("yes/no", "number", "other" in
    VQA v2), as EvalAI's perAnswerType; "scores" keeps each question's accuracy in input order.
    """
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists")
    if answer_types is not None and len(answer_types) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(answer_types)} answer types")
    if not predictions:
        raise ValueError("no predictions to score")
    scores = [vqa_accuracy(p, a, normalize_references=normalize_references) for p, a in zip(predictions, answers)]
    result: dict = {"overall": sum(scores) / len(scores)}
    if answer_types is not None:
        by_type: dict[str, list[float]] = defaultdict(list)
        for t, s in zip(answer_types, scores):
            by_type[t].append(s)
        result["per_answer_type"] = {t: sum(v) / len(v) for t, v in sorted(by_type.items())}
    result["scores"] = scores
    return result


def answer_prior_accuracy(train: Sequence[tuple[str, str, str]], evaluated: Sequence[tuple[str, str, str]]) -> dict:
    """The blind baselines of VQA (Antol et al. 2015 "prior"; Goyal et al. 2017 "per question type prior"),
    and the most common training answer of the very same question text (what a model that never looks
    at the image can reach at best on templated questions).

    train, evaluated: (question_type, question, answer) triples; answers compared after
    `normalize_vqa_answer` (exact match). A type or question unseen in training falls back to the
    wider prior.
    """
    if not train or not evaluated:
        raise ValueError("need training and evaluated (question_type, question, answer) triples")
    norm = normalize_vqa_answer
    overall = Counter(norm(a) for _, _, a in train).most_common(1)[0][0]
    by_type, by_question = defaultdict(Counter), defaultdict(Counter)
    for t, q, a in train:
        by_type[t][norm(a)] += 1
        by_question[q.strip().lower()][norm(a)] += 1
    type_prior = {t: c.most_common(1)[0][0] for t, c in by_type.items()}
    question_prior = {q: c.most_common(1)[0][0] for q, c in by_question.items()}
    hits = Counter()
    per_type = defaultdict(list)
    for t, q, a in evaluated:
        truth, guess = norm(a), type_prior.get(t, overall)
        hits["prior"] += truth == overall
        hits["type"] += truth == guess
        hits["question"] += truth == question_prior.get(q.strip().lower(), guess)
        per_type[t].append(truth == guess)
    n = len(evaluated)
    return {"prior": {"answer": overall, "accuracy": hits["prior"] / n},
            "per_question_type_prior": {"accuracy": hits["type"] / n, "types": {
                t: {"answer": type_prior.get(t, overall), "accuracy": sum(v) / len(v), "count": len(v)}
                for t, v in sorted(per_type.items())}},
            "per_question_prior": {"accuracy": hits["question"] / n}}
