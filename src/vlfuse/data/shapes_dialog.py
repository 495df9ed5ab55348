"""Visual dialogues about the built-in shapes scenes (VisDial style, Das et al. 2017), English only.

Each image gets a caption that gives only the shape counts ("six shapes: two circles, three
squares and one triangle"), then 5-10 rounds of question and answer. Questions keep a focus, the
object under discussion, and refer back to it the way people do:

    what shape is the red object?            a circle            (explicit: the focus becomes red)
    and the blue one?                        a square            (ellipsis: the last question, new subject)
    is it on the left?                       no, on the right    (pronoun: the focus, blue)
    which object is closest to it?           the green triangle at the top left   (the focus moves there)
    how many objects have the same shape as it?   two

Answers are computed from the scene geometry, with one wording per fact, so exactly one of a
round's 100 candidate answers is right. Candidates follow VisDial's recipe in spirit: the truth,
plausible answers of the same kind first (the scene's other objects for "which object" questions),
then random answers from the whole answer set. Every answer lies in `ANSWERS`, a fixed list, so a
split's `answers` array is that list and the candidates are indices into it.

The random stream is `random.Random(f"dialog:{seed}:{index}")`, apart from the one that draws the
scene and its VQA questions: adding dialogues leaves every other generated file byte-identical.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from .scene import COLORS, MARGIN, PLACES, SHAPES, Scene, ShapeObject

NUM_OPTIONS = 100
MIN_ROUNDS, MAX_ROUNDS = 5, 10
_REDRAWS = 20
_NUMBERS = ("none", "one", "two", "three", "four", "five", "six")

# The kinds of fact a question can ask about one object (its subject), and the answer's kind.
PROPERTIES = ("shape", "left", "top", "place", "count", "closest", "furthest", "closest_shape")
ANSWER_KIND = {"shape": "shape", "left": "left", "top": "top", "place": "place", "count": "number",
               "closest": "object", "furthest": "object", "closest_shape": "shape",
               "count_shape": "number", "closer": "closer"}

# {0}: the subject ("the red object" or "it").
_ASK = {
    "shape": "what shape is {0}?",
    "left": "is {0} on the left?",
    "top": "is {0} at the top?",
    "place": "where is {0}?",
    "count": "how many objects have the same shape as {0}?",
    "closest": "which object is closest to {0}?",
    "furthest": "which object is furthest from {0}?",
    "closest_shape": "what shape is the object closest to {0}?",
}
_FOLLOW_UP_CLOSEST = "and the one closest to it?"  # right after a shape question: the closest object's shape


def _place(o: ShapeObject, size: int) -> str:
    row, col = (min(2, int(v * 3 // size)) for v in (o.y, o.x))
    return PLACES["en"][row][col]


def describe(o: ShapeObject, size: int) -> str:
    return f"the {o.color} {o.shape} {_place(o, size)}"


def _answer_lists() -> dict[str, list[str]]:
    places = [p for row in PLACES["en"] for p in row]
    return {
        "shape": [f"a {s}" for s in SHAPES],
        "left": ["yes, on the left", "no, on the right"],
        "top": ["yes, at the top", "no, at the bottom"],
        "closer": ["yes, it is closer", "no, it is further away"],
        "place": places,
        "number": list(_NUMBERS),
        "object": [f"the {c} {s} {p}" for c in COLORS for s in SHAPES for p in places],
    }


ANSWERS_BY_KIND: dict[str, list[str]] = _answer_lists()
ANSWERS: list[str] = [a for kind in ANSWERS_BY_KIND.values() for a in kind]  # a split's `answers` array
ANSWER_INDEX: dict[str, int] = {a: i for i, a in enumerate(ANSWERS)}


@dataclass(frozen=True)
class Round:
    question: str
    answer: str
    family: str  # a PROPERTIES entry, "count_shape" or "closer"
    reference: str  # how the subject is named: explicit, pronoun, ellipsis or none
    options: tuple[int, ...] = ()  # indices into ANSWERS; options[gt_index] is the answer
    gt_index: int = 0


def _dist(a: ShapeObject, b: ShapeObject) -> float:
    return math.dist((a.x, a.y), (b.x, b.y))


def _extreme(scene: Scene, anchor: ShapeObject, furthest: bool) -> ShapeObject | None:
    """The object closest to (furthest from) `anchor`; None when the top two are within the margin."""
    ranked = sorted((o for o in scene.objects if o is not anchor), key=lambda o: _dist(anchor, o),
                    reverse=furthest)
    if not ranked or (len(ranked) > 1 and abs(_dist(anchor, ranked[0]) - _dist(anchor, ranked[1]))
                      < MARGIN * scene.size):
        return None
    return ranked[0]


def fact(scene: Scene, family: str, subject: ShapeObject) -> tuple[str, ShapeObject | None] | None:
    """(answer, the object the answer names, if any) of property `family` of `subject`; None if ambiguous."""
    half = scene.size / 2
    if family == "shape":
        return f"a {subject.shape}", None
    if family == "left":
        return ANSWERS_BY_KIND["left"][0 if subject.x < half else 1], None
    if family == "top":
        return ANSWERS_BY_KIND["top"][0 if subject.y < half else 1], None
    if family == "place":
        return _place(subject, scene.size), None
    if family == "count":  # the subject itself counts
        return _NUMBERS[sum(o.shape == subject.shape for o in scene.objects)], None
    other = _extreme(scene, subject, furthest=family == "furthest")
    if other is None:
        return None
    return (f"a {other.shape}", other) if family == "closest_shape" else (describe(other, scene.size), other)


def dialog_caption(scene: Scene) -> str:
    """The shape counts only: which colour has which shape is left for the dialogue to find out."""
    counts = [(sum(o.shape == s for o in scene.objects), s) for s in SHAPES]
    parts = [f"{_NUMBERS[n]} {s}{'s' if n > 1 else ''}" for n, s in counts if n]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{_NUMBERS[len(scene.objects)]} shapes: {listed}"


@dataclass
class _State:
    focus: ShapeObject | None = None
    last: str | None = None  # the property asked last, for ellipsis ("and the blue one?")


def _candidates(rng: random.Random, family: str, answer: str, scene: Scene) -> tuple[tuple[int, ...], int]:
    """100 answer indices, the truth among them: same-kind answers first (objects in the scene
    before other objects), then the rest of ANSWERS at random; shuffled."""
    kind = ANSWER_KIND[family]
    plausible = [a for a in ANSWERS_BY_KIND[kind] if a != answer]
    rng.shuffle(plausible)
    if kind == "object":
        present = [describe(o, scene.size) for o in scene.objects]
        plausible = [a for a in present if a != answer] + [a for a in plausible if a not in present]
    chosen = [answer] + plausible[: NUM_OPTIONS // 2 - 1]
    taken = set(chosen)
    rest = [a for a in ANSWERS if a not in taken]
    rng.shuffle(rest)
    chosen += rest[: NUM_OPTIONS - len(chosen)]
    rng.shuffle(chosen)
    return tuple(ANSWER_INDEX[a] for a in chosen), chosen.index(answer)


def _ask_property(rng: random.Random, scene: Scene, state: _State, reference: str) -> Round | None:
    if reference == "ellipsis":
        family = state.last
        subject = rng.choice([o for o in scene.objects if o is not state.focus])
    else:
        family = rng.choice(PROPERTIES)
        subject = state.focus if reference == "pronoun" else rng.choice(scene.objects)
    found = fact(scene, family, subject)
    if found is None:
        return None
    answer, named = found
    if reference == "ellipsis":
        question = f"and the {subject.color} one?"
    elif reference == "pronoun" and family == "closest_shape" and state.last == "shape":
        question = _FOLLOW_UP_CLOSEST
    else:
        question = _ASK[family].format("it" if reference == "pronoun" else f"the {subject.color} object")
    state.focus, state.last = named or subject, family
    if named is not None:  # "the one closest to it" becomes the topic; ellipsis after it would be unclear
        state.last = None
    return Round(question, answer, family, reference)


def _ask_closer(rng: random.Random, scene: Scene, state: _State) -> Round | None:
    first, second = rng.sample([o for o in scene.objects if o is not state.focus], 2)
    near, far = _dist(state.focus, first), _dist(state.focus, second)
    if abs(near - far) < MARGIN * scene.size:
        return None
    answer = ANSWERS_BY_KIND["closer"][0 if near < far else 1]
    state.last = None
    return Round(f"is the {first.color} object closer to it than the {second.color} object?", answer, "closer",
                 "pronoun")


def _ask_count_shape(rng: random.Random, scene: Scene, state: _State) -> Round:
    shape = rng.choice(SHAPES)
    state.last = None
    return Round(f"how many {shape}s are there?", _NUMBERS[sum(o.shape == shape for o in scene.objects)],
                 "count_shape", "none")


def _next_round(rng: random.Random, scene: Scene, state: _State) -> Round:
    while True:  # ambiguous facts (distances within the margin) are skipped: draw again
        if state.focus is None:
            form = rng.choices(("explicit", "count_shape"), (4, 1))[0]
        else:
            forms = ["explicit", "pronoun", "count_shape", "closer"] + (["ellipsis"] if state.last else [])
            form = rng.choices(forms, (3, 4, 1, 1, 3)[: len(forms)])[0]
        if form == "count_shape":
            return _ask_count_shape(rng, scene, state)
        made = _ask_closer(rng, scene, state) if form == "closer" else _ask_property(rng, scene, state, form)
        if made is not None:
            return made


def make_dialog(scene: Scene, rng: random.Random, rounds: int | None = None) -> list[Round]:
    """`rounds` rounds (default: 5 to 10 at random), each with its 100 candidates and gt_index."""
    if len(scene.objects) < 3:
        raise ValueError("a dialogue needs a scene of at least 3 objects")
    count = rng.randint(MIN_ROUNDS, MAX_ROUNDS) if rounds is None else rounds
    state, out, asked = _State(), [], set()
    for _ in range(count):
        for _ in range(_REDRAWS):  # a person does not ask the same thing twice: draw again (bounded)
            before = replace(state)
            r = _next_round(rng, scene, state)
            if r.question not in asked:
                break
            state = before
        asked.add(r.question)
        options, gt = _candidates(rng, r.family, r.answer, scene)
        out.append(Round(r.question, r.answer, r.family, r.reference, options, gt))
    return out


def dialog_rng(seed: int, index: int) -> random.Random:
    """The dialogue's own stream: never the scene's, so the other files do not change."""
    return random.Random(f"dialog:{seed}:{index}")


def visdial_split(split: str, records: list[dict]) -> dict:
    """VisDial v1.0 layout of one split: records carry image_id, dialog_caption and dialog (Rounds)."""
    questions: dict[str, int] = {}
    dialogs = []
    for r in records:
        rounds = []
        for d in r["dialog"]:
            q = questions.setdefault(d.question, len(questions))
            rounds.append({"question": q, "answer": ANSWER_INDEX[d.answer], "answer_options": list(d.options),
                           "gt_index": d.gt_index, "family": d.family, "reference": d.reference})
        dialogs.append({"image_id": r["image_id"], "caption": r["dialog_caption"], "dialog": rounds})
    return {"version": "1.0", "split": split,
            "data": {"questions": list(questions), "answers": ANSWERS, "dialogs": dialogs}}
