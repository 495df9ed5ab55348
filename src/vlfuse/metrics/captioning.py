"""Caption metrics as computed by coco-caption (pycocoevalcap): corpus BLEU-1..4, ROUGE-L, CIDEr-D.

Input: one candidate caption per image and a list of reference captions per image.

Tokenisation (simplified): lowercase, every character that is not a letter, digit, underscore
or whitespace becomes a space, then split on whitespace. coco-caption runs the Stanford PTB
tokenizer and drops punctuation tokens; the two differ on clitics and hyphens ("man's" -> "man s"
here, "man 's" there; "t-shirt" -> "t shirt" here), so scores can differ slightly from coco-caption. Given the same tokens, the scores equal
pycocoevalcap's Bleu, Rouge and Cider (tests/metrics/test_caption_scores_coco.py).

BLEU (Papineni et al. 2002, "BLEU: a method for automatic evaluation of machine translation"),
over the whole corpus as coco-caption does:
    p_n    = sum_c sum_g min(count_c(g), max_r count_r(g)) / sum_c #n-grams(c)   (clipped precision)
    BP     = 1 if c_len >= r_len else exp(1 - r_len / c_len)
    BLEU-N = BP * exp(1/N * sum_{n<=N} log p_n)
c_len sums candidate lengths; r_len sums, per candidate, the reference length closest to it (the
shorter one on a tie). coco-caption adds 1e-15 / 1e-9 guards to the fractions, so a p_n of zero
gives a tiny positive BLEU there (~1e-4 for BLEU-4); here it gives exactly 0, as does an empty corpus.

ROUGE-L (Lin 2004, "ROUGE: a package for automatic evaluation of summaries"), per candidate as
coco-caption: P = max_r LCS(c, r) / |c|, R = max_r LCS(c, r) / |r| (the two maxima taken
separately), F = (1 + b^2) P R / (R + b^2 P) with b = 1.2, 0 if P or R is 0; corpus score = mean F.

CIDEr-D (Vedantam et al. 2015, "CIDEr: Consensus-based image description evaluation"), as
coco-caption's `Cider`: for n = 1..4, each sentence is a vector of tf-idf weights
    g(w) = count(w) * (log(#images) - log(max(1, df(w))))
where df(w) = number of images whose references contain n-gram w (the idf comes from the
references of the evaluated corpus itself). Per image and n:
    CIDEr_n = 1/|refs| * sum_r exp(-(|c| - |r|)^2 / (2 sigma^2)) * sum_w min(g_c(w), g_r(w)) g_r(w) / (||g_c|| ||g_r||)
with sigma = 6, and CIDEr-D = 10 * mean_n CIDEr_n; the corpus score is the mean over images.
(coco-caption measures lengths as bigram counts, i.e. |s| - 1 for a non-empty sentence, which
gives the same difference.) With a single image every idf is log(1) - log(1) = 0, so CIDEr-D is
0: it needs a corpus of several images.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

_NOT_WORD = re.compile(r"[^\w\s]")


def tokenize(caption: str) -> list[str]:
    """Lowercase, punctuation to spaces, split: "A man's T-shirt." -> ["a", "man", "s", "t", "shirt"]."""
    return _NOT_WORD.sub(" ", caption.lower()).split()


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _prepare(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[list, list]:
    if isinstance(candidates, str):
        raise ValueError("candidates must be a list of captions, one per image, not one string")
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    if not candidates:
        raise ValueError("no captions to score")
    refs = []
    for i, rs in enumerate(references):
        if isinstance(rs, str) or not rs:
            raise ValueError(f"references[{i}] must be a non-empty list of captions")
        tokenized = [tokenize(r) for r in rs]
        if not all(tokenized):
            raise ValueError(f"references[{i}] holds a caption with no words")
        refs.append(tokenized)
    return [tokenize(c) for c in candidates], refs


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> dict[str, float]:
    """Corpus BLEU-1..max_n: {"bleu_1": ..., "bleu_4": ...} (see the module docstring)."""
    cands, refs = _prepare(candidates, references)
    matched, total = [0] * max_n, [0] * max_n
    cand_len = ref_len = 0
    for c, rs in zip(cands, refs):
        cand_len += len(c)
        ref_len += min((abs(len(r) - len(c)), len(r)) for r in rs)[1]  # closest, shorter on a tie
        for n in range(1, max_n + 1):
            max_ref = Counter()
            for r in rs:
                max_ref |= _ngrams(r, n)  # Counter union keeps the larger count: the clipping ceiling
            matched[n - 1] += sum(min(k, max_ref[g]) for g, k in _ngrams(c, n).items())
            total[n - 1] += max(len(c) - n + 1, 0)
    if cand_len == 0:
        return {f"bleu_{n}": 0.0 for n in range(1, max_n + 1)}
    penalty = 1.0 if cand_len >= ref_len else math.exp(1 - ref_len / cand_len)
    scores, log_sum = {}, 0.0
    for n in range(1, max_n + 1):
        if matched[n - 1] == 0:  # log 0: this and every longer BLEU are 0
            scores.update({f"bleu_{m}": 0.0 for m in range(n, max_n + 1)})
            break
        log_sum += math.log(matched[n - 1] / total[n - 1])
        scores[f"bleu_{n}"] = penalty * math.exp(log_sum / n)
    return scores


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)  # one row of the classic DP table
    for x in a:
        diag = 0
        for j, y in enumerate(b, 1):
            diag, row[j] = row[j], diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l_scores(candidates: Sequence[str], references: Sequence[Sequence[str]], beta: float = 1.2) -> list[float]:
    """ROUGE-L F-measure of each candidate (see the module docstring)."""
    cands, refs = _prepare(candidates, references)
    scores = []
    for c, rs in zip(cands, refs):
        lcs = [_lcs(c, r) for r in rs]
        precision = max(lcs) / len(c) if c else 0.0
        recall = max(n / len(r) for n, r in zip(lcs, rs))
        if precision == 0 or recall == 0:
            scores.append(0.0)
        else:
            scores.append((1 + beta ** 2) * precision * recall / (recall + beta ** 2 * precision))
    return scores


def rouge_l(candidates: Sequence[str], references: Sequence[Sequence[str]], beta: float = 1.2) -> float:
    """Corpus ROUGE-L: the mean of the per-candidate F-measures."""
    scores = rouge_l_scores(candidates, references, beta)
    return sum(scores) / len(scores)


class CiderD:
    """CIDEr-D with its idf fixed by a corpus of reference lists (see the module docstring), for scoring
    many candidate batches on one scale (self-critical training's reward: the training references).
    Sentences are token lists: any hashable tokens (words, or a tokenizer's ids)."""

    def __init__(self, corpus: Sequence[Sequence[Sequence]], sigma: float = 6.0, max_n: int = 4):
        self.sigma, self.max_n = sigma, max_n
        self.doc_freq = Counter()
        for rs in corpus:
            self.doc_freq.update({g for r in rs for n in range(1, max_n + 1) for g in _ngrams(r, n)})
        self.log_images = math.log(len(corpus))

    def _vectors(self, tokens: Sequence) -> list[tuple[dict, float]]:
        out = []
        for n in range(1, self.max_n + 1):
            vec = {g: k * (self.log_images - math.log(max(1, self.doc_freq[g]))) for g, k in _ngrams(tokens, n).items()}
            out.append((vec, math.sqrt(sum(v * v for v in vec.values()))))
        return out

    def scores(self, candidates: Sequence[Sequence], references: Sequence[Sequence[Sequence]]) -> list[float]:
        """CIDEr-D of candidate i against references[i], for every i."""
        scores = []
        for c, rs in zip(candidates, references):
            cand_vecs, total = self._vectors(c), 0.0
            for r in rs:
                penalty = math.exp(-((len(c) - len(r)) ** 2) / (2 * self.sigma ** 2))
                for (gc, norm_c), (gr, norm_r) in zip(cand_vecs, self._vectors(r)):
                    if norm_c and norm_r:
                        # "-D": the candidate's weight is clipped to the reference's, so repeating a
                        # word cannot raise the score
                        dot = sum(min(v, gr.get(g, 0.0)) * gr.get(g, 0.0) for g, v in gc.items())
                        total += penalty * dot / (norm_c * norm_r)
            scores.append(10.0 * total / (self.max_n * len(rs)))
        return scores


def cider_d_scores(candidates: Sequence[str], references: Sequence[Sequence[str]], sigma: float = 6.0,
                   max_n: int = 4) -> list[float]:
    """CIDEr-D of each candidate, idf taken from all the references given (see the module docstring)."""
    cands, refs = _prepare(candidates, references)
    return CiderD(refs, sigma, max_n).scores(cands, refs)


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]], sigma: float = 6.0) -> float:
    """Corpus CIDEr-D: the mean of the per-image scores."""
    scores = cider_d_scores(candidates, references, sigma)
    return sum(scores) / len(scores)


def caption_metrics(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D in one dict (keys bleu_1..bleu_4, rouge_l, cider_d)."""
    return {**bleu(candidates, references), "rouge_l": rouge_l(candidates, references),
            "cider_d": cider_d(candidates, references)}
