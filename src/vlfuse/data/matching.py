"""Samples for task matching: a statement about an image, true or false.

Statement formats (nlvr, nlvr2, jsonl) bring their labels; `true_false_samples` checks them.
Caption formats bring only true statements, so `captions_to_statements` pairs each caption with
its image (true) and makes one false statement per caption, of one of two kinds:

- similar: the caption of another image that is most like it (cosine of bag-of-n-gram vectors;
  with one caption per image, the hardest negative of `losses.itm.sample_hard_negatives` at
  temperature 0), so telling them apart needs the detail where they differ;
- attribute: the caption itself with one attribute word (e.g. "square") swapped for another of
  the list ("circle"), a single-word change that the image alone refutes.

The one NLVR split published with images here is dev, so `hold_out_sentences` divides one file by
sentence: every image of a sentence falls on the same side, and the consistency metric (all of a
sentence's images right) stays honest.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch

from ..config import MatchingConfig
from ..errors import DataError
from .records import CaptionSample, VQASample

TRUE, FALSE = "true", "false"
LABELS = (FALSE, TRUE)  # class 1 = the statement holds
_SYNONYMS = {"true": TRUE, "yes": TRUE, "1": TRUE, "false": FALSE, "no": FALSE, "0": FALSE}
_WORD = re.compile(r"\w+")


# --------------------------------------------------------------------------- statements with labels

def nlvr_sentence_id(identifier: str) -> str:
    """The sentence an NLVR example belongs to.

    NLVR2 "<split>-<set>-<pair>-<sentence>" -> "<split>-<set>-<sentence>" (the pair number varies
    across the image pairs of one sentence: dev-850-0-1 and dev-850-3-1 share "dev-850-1").
    NLVR "<sentence>-<image>" -> "<sentence>" (1572-0 .. 1572-3 share "1572").
    """
    parts = identifier.split("-")
    if len(parts) == 4:
        return "-".join((parts[0], parts[1], parts[3]))
    if len(parts) == 2:
        return parts[0]
    raise ValueError(f"not an NLVR or NLVR2 identifier: {identifier!r}")


def true_false_samples(samples: list[VQASample], source: str | Path) -> list[VQASample]:
    """Samples whose answers are true/false (or yes/no, 1/0), answers written as "true"/"false".

    A sample without an answer is kept as is (a test set without labels); any other answer is an
    error naming `source` and the sample.
    """
    out = []
    for sample in samples:
        if sample.answer is None:
            out.append(sample)
            continue
        label = _SYNONYMS.get(sample.answer.strip().lower())
        if label is None:
            raise DataError(f"task matching needs true/false answers; question_id {sample.question_id!r} has "
                            f"{sample.answer!r}", path=source, field="answer")
        out.append(replace(sample, answer=label, answers=(label,)))
    return out


def sentence_id(sample: VQASample, data_format: str) -> str:
    """The sentence a statement belongs to, for the consistency metric and the sentence split.

    NLVR: the identifier's sentence part (1572-0 -> 1572); NLVR2: dev-850-0-1 -> dev-850-1; a
    statement made from captions: its source caption; anything else: the statement's text.
    """
    if "sentence_id" in sample.extra:
        return str(sample.extra["sentence_id"])
    if data_format == "nlvr" and "identifier" in sample.extra:
        return nlvr_sentence_id(f"{sample.extra['identifier']}")
    if data_format == "nlvr2":
        try:
            return nlvr_sentence_id(str(sample.question_id))
        except ValueError:
            pass
    return sample.question


def hold_out_sentences(samples: list[VQASample], data_format: str, fraction: float, seed: int,
                       held_out: bool) -> list[VQASample]:
    """The held-out side (`held_out`) or the rest of a deterministic split by sentence id.

    The sentence ids are sorted, shuffled by `seed`, and the first round(fraction * n) are held
    out, so the split depends only on the file's sentences and the seed, never on line order.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    ids = sorted({sentence_id(s, data_format) for s in samples})
    random.Random(seed).shuffle(ids)
    chosen = set(ids[: round(fraction * len(ids))])
    return [s for s in samples if (sentence_id(s, data_format) in chosen) == held_out]


def first_images(samples: list[VQASample], n: int) -> list[VQASample]:
    """Statements on at most their first n images (NLVR's `image_index` k of its six renders)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [s for s in samples if int(s.extra.get("image_index", 0)) < n]


# --------------------------------------------------------------------------- negatives from captions

def ngram_vectors(texts: list[str], n: int = 2) -> torch.Tensor:
    """L2-normalised counts of each text's word 1..n-grams (lower-cased): [T, V].

    Bigrams keep some binding ("red square" vs "red circle") that single words lose.
    """
    grams = []
    for text in texts:
        words = _WORD.findall(text.lower())
        grams.append(Counter(" ".join(words[i: i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1)))
    vocab = {g: i for i, g in enumerate(sorted({g for c in grams for g in c}))}
    vectors = torch.zeros(len(texts), max(len(vocab), 1))
    for row, counts in enumerate(grams):
        for gram, count in counts.items():
            vectors[row, vocab[gram]] = count
    return torch.nn.functional.normalize(vectors, dim=1)


def most_similar_other(vectors: torch.Tensor, owner: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """For each row t, the row of another owner most similar to it (cosine; ties: the lowest index).

    The hardest negative of each caption among the other images' captions; computed in chunks
    of rows, so 100k captions never need a 100k x 100k matrix at once.
    """
    if len(set(owner.tolist())) < 2:
        raise ValueError("hard negatives need captions of at least two images")
    out = torch.empty(len(vectors), dtype=torch.long)
    for start in range(0, len(vectors), chunk):
        sim = vectors[start: start + chunk] @ vectors.T
        sim.masked_fill_(owner[start: start + chunk, None] == owner[None, :], float("-inf"))
        out[start: start + chunk] = sim.argmax(1)
    return out


def swap_attribute(caption: str, words: list[str], rng: random.Random) -> str | None:
    """`caption` with one occurrence of one of `words` replaced by another of them, or None when it has none."""
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)
    found = list(pattern.finditer(caption))
    if not found or len(words) < 2:
        return None
    hit = rng.choice(found)
    new = rng.choice([w for w in words if w.lower() != hit.group(0).lower()])
    return caption[: hit.start()] + new + caption[hit.end():]


def captions_to_statements(samples: list[CaptionSample], config: MatchingConfig, seed: int
                           ) -> list[VQASample]:
    """Every caption as a true statement about its image, plus one false statement per caption.

    Negative kinds by config.negatives (see the module docstring); `mixed` alternates them over the
    captions in order. A caption with no attribute word to swap gets a `similar` negative instead.
    question_type says which kind each statement is: positive, similar or attribute.
    """
    pairs = [(s, c) for s in samples for c in s.captions]
    if not pairs:
        return []
    owner = torch.tensor([i for i, s in enumerate(samples) for _ in s.captions])
    captions = [c for _, c in pairs]
    similar = most_similar_other(ngram_vectors(captions), owner) if len(samples) > 1 else None
    rng = random.Random(seed)
    out = []
    for t, (sample, caption) in enumerate(pairs):
        base = dict(image_id=sample.image_id, image_path=sample.image_path, answer_type="true/false")
        out.append(VQASample(question_id=f"{sample.image_id}-{t}-pos", question=caption, answer=TRUE,
                             answers=(TRUE,), question_type="positive", extra={"sentence_id": caption}, **base))
        want_attribute = config.negatives == "attribute" or (config.negatives == "mixed" and t % 2 == 1)
        swapped = swap_attribute(caption, config.attribute_words, rng) if want_attribute else None
        if swapped is not None:
            text, kind = swapped, "attribute"
        elif similar is not None:
            text, kind = captions[int(similar[t])], "similar"
        else:
            continue  # one image and nothing to swap: no negative can be made
        out.append(VQASample(question_id=f"{sample.image_id}-{t}-neg", question=text, answer=FALSE,
                             answers=(FALSE,), question_type=kind, extra={"sentence_id": text}, **base))
    return out
