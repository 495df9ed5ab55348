"""Few-shot episodes: which answers are new, k examples of each per seed, and the questions to score.

Support examples come from one split (train), query questions from another (test); when both are
the same split (a single table), each episode's query set leaves out that episode's support set.
Support sets are nested (the 1-shot set is the first example of the 5-shot set, ...), drawn by seed,
so the curve over k shows what more examples add rather than what a new draw does.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, DataConfig, SplitConfig, load_config
from ..data.answers import AnswerVocab, normalize_answer
from ..data.formats.common import ReadResult
from ..data.loading import read_split
from ..errors import ConfigError, DataError

TASKS = ("vqa", "classification")  # models that answer with a class, where new classes make sense
TABLE_SUFFIXES = (".jsonl", ".csv")


@dataclass
class Episode:
    seed: int
    shots: int
    support: list[int]  # indices into the candidates, k per new answer
    query: list[int]


@dataclass
class Candidates:
    """Every question a run may use: support pools by answer, and the query questions."""

    samples: list
    pools: dict[str, list[int]]  # new answer -> indices of its support-split questions
    query: list[int]
    same_split: bool
    skipped: int  # bad samples the readers skipped


def data_config(model_config: Config, data: str | Path | None) -> tuple[DataConfig, str, str]:
    """(data config, support split, query split): the model's own data, a YAML config's data section, or
    a .jsonl/.csv table (then support and query are drawn from it, disjoint). exclude_answers is cleared:
    the held-out questions are the point here."""
    if data is None:
        cfg, splits = model_config.data, ("train", "test")
    elif Path(data).suffix.lower() in TABLE_SUFFIXES:
        table = SplitConfig(path=str(data))
        cfg = dataclasses.replace(model_config.data, format="jsonl", root=".", train=table, val=None, test=table,
                                  scene_graphs=None)
        splits = ("test", "test")
    else:
        cfg, splits = load_config(data).data, ("train", "test")
    return dataclasses.replace(cfg, exclude_answers=[]), *splits


def new_answers(samples: list, known: AnswerVocab, requested: list[str] | None, source: str) -> list[str]:
    """The answers to learn: `requested`, or every answer of `samples` the model has no class for, sorted."""
    present = {normalize_answer(s.answer) for s in samples if s.answer is not None}
    if requested is None:
        unseen = sorted(a for a in present if known.index(a) is None)
        if not unseen:
            raise DataError("every answer here is already one of the model's classes: nothing new to learn "
                            "(train with data.exclude_answers, or name the answers with --answers)", path=source)
        return _at_least_two(unseen)
    answers = list(dict.fromkeys(normalize_answer(a) for a in requested))
    for answer in answers:
        if known.index(answer) is not None:
            raise ConfigError(f"--answers: {answer!r} is one of the model's classes; few-shot learns answers "
                              "the model has never seen")
        if answer not in present:
            raise DataError(f"--answers: no question has the answer {answer!r}", path=source)
    return _at_least_two(answers)


def _at_least_two(answers: list[str]) -> list[str]:
    if len(answers) < 2:  # one class is always right: no accuracy to report
        raise ConfigError(f"few-shot needs at least 2 new answers to tell apart, got {answers} (set --answers, "
                          "or hold more out with data.exclude_answers)")
    return answers


def read_candidates(cfg: DataConfig, support_split: str, query_split: str, known: AnswerVocab,
                    requested: list[str] | None) -> tuple[Candidates, list[str]]:
    """The questions whose answers are new, by split, and the new answers."""
    support_read = read_split(cfg, support_split)
    same = support_split == query_split
    query_read = support_read if same else read_split(cfg, query_split)
    answers = new_answers(support_read.samples, known, requested, _source(cfg, support_split))
    wanted = set(answers)

    def keep(read: ReadResult) -> list:
        return [s for s in read.samples if s.answer is not None and normalize_answer(s.answer) in wanted]

    support = keep(support_read)
    query = support if same else keep(query_read)
    samples = support if same else support + query
    pools = {a: [] for a in answers}
    for i, s in enumerate(support):
        pools[normalize_answer(s.answer)].append(i)
    first_query = 0 if same else len(support)
    if not query:
        raise DataError(f"no {query_split} question has one of the new answers {answers}", path=_source(cfg, query_split))
    skipped = support_read.skipped.count + (0 if same else query_read.skipped.count)
    return Candidates(samples, pools, list(range(first_query, len(samples))), same, skipped), answers


def _source(cfg: DataConfig, split: str) -> str:
    spec = getattr(cfg, split)
    name = next((getattr(spec, k) for k in ("questions", "path", "annotations") if getattr(spec, k, None)), "")
    return str(Path(cfg.root).expanduser() / str(name))


def check_shots(pools: dict[str, list[int]], shots: list[int], same_split: bool) -> None:
    """Every new answer needs k support examples (and, from a single table, one more left to score)."""
    if not shots or any(k < 1 for k in shots):
        raise ConfigError(f"--shots: each k must be an integer >= 1, got {shots}")
    need = max(shots) + (1 if same_split else 0)
    answer, pool = min(pools.items(), key=lambda kv: len(kv[1]))
    if len(pool) < need:
        raise DataError(f"--shots {max(shots)}: the answer {answer!r} has only {len(pool)} support examples "
                        f"(needs {need}); use fewer shots or drop the answer with --answers")


def draw_episodes(candidates: Candidates, shots: list[int], seeds: int) -> list[Episode]:
    """One episode per (seed, k): k support questions per new answer, nested in k for a seed."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    check_shots(candidates.pools, shots, candidates.same_split)
    episodes = []
    for seed in range(seeds):
        rng = random.Random(seed)
        order = {a: rng.sample(pool, max(shots)) for a, pool in candidates.pools.items()}
        for k in sorted(shots):
            support = [i for picks in order.values() for i in picks[:k]]
            taken = set(support) if candidates.same_split else set()
            episodes.append(Episode(seed, k, support, [i for i in candidates.query if i not in taken]))
    return episodes
