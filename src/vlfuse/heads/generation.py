"""Batched caption search over any decoder with start / step / select (see heads.caption_decoders).

Greedy search takes the most likely token at each step; sampling draws it from the decoder's
distribution (self-critical training). Beam search keeps `beam_size` prefixes
per image; a candidate ending in EOS among the top `beam_size` becomes a finished hypothesis (the
best `beam_size` are kept). Hypotheses are ranked by their summed log-probability divided by the
GNMT length penalty (Wu et al. 2016, "Google's Neural Machine Translation System"):

    lp(Y) = ((5 + |Y|) / 6) ** alpha,   |Y| = tokens generated, EOS included

alpha 0 ranks by the plain sum (which favours short captions); larger alpha favours longer ones.
An image is done when it has `beam_size` hypotheses and no live prefix can beat the worst of
them: log-probs only fall as a prefix grows, so a prefix's best final rank is at most its sum
divided by the largest lp it could still reach. With alpha 0, beam_size 1 is greedy search; with
alpha > 0 it may look past an early EOS for a longer caption that ranks higher.
A prefix that reaches `max_length` tokens without EOS is finished as it stands. `blocked` token
ids (padding, BOS, unknown) are never generated, and EOS is not before `min_length` words (default 1:
a young model's "end" as the first token would otherwise win beam search as an empty caption, whose
one-token sum beats any real caption's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..types import Features


@dataclass
class Generated:
    """One caption per image: token ids (no BOS, no EOS) and the summed log-probability of the
    tokens generated (EOS included when it was generated)."""

    ids: list[list[int]]
    log_probs: list[float]


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's lp = ((5 + length) / 6) ** alpha."""
    return ((5 + length) / 6) ** alpha


def _check(max_length: int, beam_size: int = 1) -> None:
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")


def _next_log_probs(decoder, state, tokens: torch.Tensor, blocked: tuple[int, ...]):
    logits, state = decoder.step(state, tokens)
    log_probs = logits.float().log_softmax(-1)
    if blocked:
        log_probs[:, list(blocked)] = float("-inf")
    return log_probs, state


def _blocked_at(blocked: tuple[int, ...], eos: int, t: int, min_length: int) -> tuple[int, ...]:
    """The tokens blocked at step t: EOS too while the caption is shorter than min_length words."""
    return (*blocked, eos) if t < min_length else blocked


@torch.no_grad()
def greedy_search(decoder, image: Features, bos: int, eos: int, max_length: int, blocked: tuple[int, ...] = (),
                  min_length: int = 1) -> Generated:
    """The most likely next token at every step, for every image of the batch at once."""
    return _token_by_token(decoder, image, bos, eos, max_length, blocked, min_length, lambda p: p.max(-1))


@torch.no_grad()
def sample_search(decoder, image: Features, bos: int, eos: int, max_length: int, blocked: tuple[int, ...] = (),
                  min_length: int = 1, generator: torch.Generator | None = None) -> Generated:
    """Each next token drawn from the decoder's distribution (self-critical training's samples); the same
    generator state draws the same captions."""
    def draw(log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        token = torch.multinomial(log_probs.exp(), 1, generator=generator)
        return log_probs.gather(1, token).squeeze(1), token.squeeze(1)
    return _token_by_token(decoder, image, bos, eos, max_length, blocked, min_length, draw)


def _token_by_token(decoder, image: Features, bos: int, eos: int, max_length: int, blocked: tuple[int, ...],
                    min_length: int, choose) -> Generated:
    """One caption per image, every image of the batch at once; choose(log_probs [B, V]) -> (log-prob, token)."""
    _check(max_length)
    batch = image.tokens.shape[0]
    device = image.tokens.device
    state = decoder.start(image)
    tokens = torch.full((batch, 1), bos, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    lengths = torch.full((batch,), max_length, dtype=torch.long, device=device)
    scores = torch.zeros(batch, device=device)
    for t in range(max_length):
        log_probs, state = _next_log_probs(decoder, state, tokens, _blocked_at(blocked, eos, t, min_length))
        best, token = choose(log_probs)
        scores += torch.where(finished, torch.zeros_like(best), best)
        token = token.masked_fill(finished, eos)  # finished rows repeat EOS, outside their caption
        ended = ~finished & (token == eos)
        lengths[ended] = t  # words before the EOS
        finished |= ended
        tokens = torch.cat([tokens, token[:, None]], 1)
        if finished.all():
            break
    ids = [row[1: 1 + n].tolist() for row, n in zip(tokens, lengths.tolist())]
    return Generated(ids, scores.tolist())


def _best_reachable(score: float, shortest: int, longest: int, alpha: float) -> float:
    """The highest rank a live prefix with summed log-prob `score` (<= 0) can reach at a final length
    between `shortest` and `longest`: later tokens only lower the sum, so divide it by the largest lp."""
    if shortest > longest:  # the prefix is already as long as a caption may be
        shortest = longest
    return score / max(length_penalty(shortest, alpha), length_penalty(longest, alpha))


@torch.no_grad()
def beam_search(decoder, image: Features, bos: int, eos: int, max_length: int, beam_size: int = 3,
                alpha: float = 0.0, blocked: tuple[int, ...] = (), min_length: int = 1) -> Generated:
    """The best of `beam_size` hypotheses per image by log-prob / lp (see the module docstring)."""
    _check(max_length, beam_size)
    batch, k = image.tokens.shape[0], beam_size
    device = image.tokens.device
    state = decoder.select(decoder.start(image), torch.arange(batch, device=device).repeat_interleave(k))
    tokens = torch.full((batch * k, 1), bos, dtype=torch.long, device=device)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start equal: keep one, or the first step would pick k copies
    hypotheses: list[list[tuple[float, float, list[int]]]] = [[] for _ in range(batch)]  # (ranked, log-prob, ids)
    done = [False] * batch
    for t in range(max_length):
        log_probs, state = _next_log_probs(decoder, state, tokens, _blocked_at(blocked, eos, t, min_length))
        vocab = log_probs.shape[-1]
        candidates = (scores.view(-1, 1) + log_probs).view(batch, k * vocab)
        top_scores, top_index = candidates.topk(min(2 * k, k * vocab), dim=1)
        rows, next_tokens, next_scores = [], [], []
        for b in range(batch):
            alive: list[tuple[int, int, float]] = []  # (row of tokens, token, score)
            if not done[b]:
                for rank, (score, index) in enumerate(zip(top_scores[b].tolist(), top_index[b].tolist())):
                    if score == float("-inf") or len(alive) == k:
                        break
                    row, token = b * k + index // vocab, index % vocab
                    if token == eos:
                        if rank < k:  # an EOS below the top k would have been outscored by k live beams
                            ids = tokens[row, 1:].tolist()
                            hypotheses[b].append((score / length_penalty(t + 1, alpha), score, ids))
                    else:
                        alive.append((row, token, score))
                hypotheses[b] = sorted(hypotheses[b], key=lambda h: -h[0])[:k]
                done[b] = not alive or (len(hypotheses[b]) >= k and _best_reachable(alive[0][2], t + 2, max_length,
                                                                                  alpha) <= hypotheses[b][-1][0])
            alive += [(b * k, eos, float("-inf"))] * (k - len(alive))  # filler rows, never chosen again
            for row, token, score in alive:
                rows.append(row)
                next_tokens.append(token)
                next_scores.append(score)
        if all(done):
            break
        rows_t = torch.tensor(rows, device=device)
        tokens = torch.cat([tokens.index_select(0, rows_t), torch.tensor(next_tokens, device=device)[:, None]], 1)
        scores = torch.tensor(next_scores, device=device).view(batch, k)
        state = decoder.select(state, rows_t)
    else:  # max_length reached: the live prefixes finish as they stand
        for b in range(batch):
            if not done[b]:
                for j in range(k):
                    score = float(scores[b, j])
                    if score > float("-inf"):
                        hypotheses[b].append((score / length_penalty(max_length, alpha), score,
                                              tokens[b * k + j, 1:].tolist()))
    # No hypothesis at all only when every token but EOS is blocked and EOS never ranked: an empty caption.
    best = [max(h, key=lambda item: item[0]) if h else (float("-inf"), float("-inf"), []) for h in hypotheses]
    return Generated([ids for _, _, ids in best], [score for _, score, _ in best])
