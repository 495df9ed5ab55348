"""vlfuse's BLEU-1..4, ROUGE-L and CIDEr-D equal the COCO caption evaluation's (pycocoevalcap) on the
same tokenised captions: the scores the captioning literature reports.

pycocoevalcap's Bleu, Rouge and Cider scorers are pure Python (only its PTB tokenizer and METEOR /
SPICE need Java, and they are not used here). Both sides get captions already tokenised by
vlfuse.metrics.captioning.tokenize, so only the scoring is compared. The data: real Flickr8k val
captions when ../shared/data is present (one reference held out as each image's candidate, and a
shuffled candidate for a spread of scores), else a small set written here.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from vlfuse.metrics.captioning import bleu, cider_d, rouge_l, tokenize

coco_bleu = pytest.importorskip("pycocoevalcap.bleu.bleu", reason="pip install pycocoevalcap (the test extra)")
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402

FLICKR8K = Path(__file__).resolve().parents[3] / "shared" / "data" / "flickr8k" / "dataset_flickr8k.json"

WRITTEN = [
    ("a dog runs across the grass", ["a brown dog is running on the grass", "a dog runs through a field",
                                     "the dog is playing outside", "a puppy runs on green grass"]),
    ("two children play in the water", ["two kids are splashing in a pool", "children playing in water",
                                        "two young boys swim in the lake"]),
    ("a man rides a bike", ["a man riding a bicycle down a street", "a cyclist on a road", "a man on a bike"]),
    ("a woman in a red dress", ["a woman wearing a red dress stands outside", "a lady in red",
                                "a woman in a red dress smiles at the camera", "a woman poses"]),
    ("people", ["a crowd of people at a concert", "many people stand together", "people watching a show"]),
    ("a black and white dog jumps over a bar", ["a black and white dog jumps over a hurdle",
                                               "a dog jumping over an obstacle", "a dog leaps over a bar"]),
]


def flickr8k_corpus(images: int = 200) -> list[tuple[str, list[str]]]:
    """(candidate, references) from real val captions: the first caption against the other four, and
    for every third image another image's caption (a poor candidate, so scores spread)."""
    entries = [e for e in json.loads(FLICKR8K.read_text(encoding="utf-8"))["images"] if e["split"] == "val"][:images]
    rng = random.Random(0)
    corpus = []
    for i, entry in enumerate(entries):
        sentences = [s["raw"] for s in entry["sentences"]]
        candidate = sentences[0] if i % 3 else rng.choice(entries)["sentences"][1]["raw"]
        corpus.append((candidate, sentences[1:]))
    return corpus


@pytest.fixture(params=["written", "flickr8k"])
def corpus(request) -> list[tuple[str, list[str]]]:
    if request.param == "written":
        return WRITTEN
    if not FLICKR8K.is_file():
        pytest.skip(f"real captions not found at {FLICKR8K}")
    return flickr8k_corpus()


def coco_inputs(corpus) -> tuple[dict, dict, list[str], list[list[str]]]:
    """pycocoevalcap's {id: [caption]} dicts of space-joined tokens, and the same captions as vlfuse takes them."""
    candidates = [" ".join(tokenize(c)) for c, _ in corpus]
    references = [[" ".join(tokenize(r)) for r in refs] for _, refs in corpus]
    return ({i: [c] for i, c in enumerate(candidates)}, dict(enumerate(references)), candidates, references)


def test_bleu_equals_pycocoevalcap(corpus):
    res, gts, candidates, references = coco_inputs(corpus)
    theirs, _ = coco_bleu.Bleu(4).compute_score(gts, res, verbose=0)
    ours = bleu(candidates, references)
    # pycocoevalcap adds 1e-15 / 1e-9 to each precision's numerator / denominator: agreement to ~1e-9.
    assert [ours[f"bleu_{n}"] for n in range(1, 5)] == pytest.approx(theirs, rel=1e-7, abs=1e-12)


def test_rouge_l_equals_pycocoevalcap(corpus):
    res, gts, candidates, references = coco_inputs(corpus)
    theirs, _ = Rouge().compute_score(gts, res)
    assert rouge_l(candidates, references) == pytest.approx(theirs, rel=1e-12)


def test_cider_d_equals_pycocoevalcap(corpus):
    res, gts, candidates, references = coco_inputs(corpus)
    theirs, per_image = Cider().compute_score(gts, res)
    assert theirs > 0.1  # a corpus that exercises the idf weights, not an all-zero score
    assert cider_d(candidates, references) == pytest.approx(theirs, rel=1e-9)
