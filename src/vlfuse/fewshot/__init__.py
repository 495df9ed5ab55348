"""Few-shot transfer: teach a trained VQA or classification model answers it never saw, from k examples each.

    from vlfuse.fewshot import fewshot
    result = fewshot("runs/fewshot_shapes/model", shots=(1, 5, 10), seeds=5)
    result["curve"]["prototype"]["5"]   # {"mean", "sd", "accuracies"}: 5-shot accuracy over the seeds

The encoders stay frozen. prototype and linear_probe fit a small classifier over the new answers
only (methods.py) on the fused pooled features (what the answer head reads) of k support questions
per new answer; finetune (finetune.py) also trains the fusion's top layer. The classifier then
answers the query questions of those answers. Each seed draws other support sets.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..data.answers import normalize_answer
from ..data.formats.common import SkipLog
from ..errors import ConfigError, DataError
from .data import TASKS, data_config, draw_episodes, read_candidates
from .evaluate import ALL_METHODS, baselines, learning_curve, predictor, probe_ceiling
from .features import encode, pooled_features

DEFAULT_SHOTS = (1, 5, 10)


def check_methods(methods: list[str]) -> None:
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        raise ConfigError(f"--methods: unknown method {unknown[0] if unknown else '(none)'!r}; "
                          f"expected some of {', '.join(ALL_METHODS)}")


def fewshot(model_dir: str | Path, data: str | Path | None = None, shots=DEFAULT_SHOTS, seeds: int = 5,
            answers: list[str] | None = None, methods: list[str] | None = None, ceiling: bool = False,
            progress: bool = True, out: str | Path | None = None) -> dict:
    """The learning curve of each method (k vs accuracy over the new answers, mean ± sd over seeds).

    data: a YAML config (its data section) or a .jsonl/.csv table; default the model's own data.
    Support questions come from its train split, query questions from its test split (a table: both
    from it, disjoint). answers: the new answers; default every answer the model has no class for.
    ceiling: also fit the linear probe on every support question of the new answers (all of them are
    encoded: slower), the most the frozen features can give. out: also write the result as JSON there.
    """
    from ..models.saved import load_model_dir

    clock = time.perf_counter()
    methods = list(methods or ALL_METHODS)
    check_methods(methods)
    saved = load_model_dir(model_dir)
    if saved.config.task not in TASKS:
        raise DataError(f"holds a {saved.config.task} model: few-shot transfer needs a {' or '.join(TASKS)} model",
                        path=model_dir)
    cfg, support_split, query_split = data_config(saved.config, data)
    candidates, new = read_candidates(cfg, support_split, query_split, saved.answers, answers)
    shots = sorted(set(int(k) for k in shots))
    episodes = draw_episodes(candidates, shots, seeds)
    needed = {i for e in episodes for i in e.support} | set(candidates.query)
    if ceiling:
        needed |= {i for pool in candidates.pools.values() for i in pool}
    needed = sorted(needed)
    skip_log = SkipLog(cfg.on_bad_sample)
    encoded = encode(saved, [candidates.samples[i] for i in needed], skip_log, progress=progress)
    rows = {needed[j]: row for j, row in encoded.rows.items()}  # back to indices into the candidates
    features = pooled_features(saved, encoded)
    labels = torch.full((len(features),), -1, dtype=torch.long)
    for i, row in rows.items():
        labels[row] = new.index(normalize_answer(candidates.samples[i].answer))
    result = {
        "model": str(model_dir), "task": saved.config.task, "answers": new,
        "support_split": support_split, "query_split": query_split,
        "support_pool": {a: len(p) for a, p in candidates.pools.items()},
        "query_questions": sum(i in rows for i in candidates.query),
        "shots": shots, "seeds": seeds, "methods": methods, "feature_dim": features.shape[1],
        **baselines(labels, rows, candidates.query, new),
        "curve": learning_curve({m: predictor(m, saved.model.fusion, encoded, features) for m in methods}, labels,
                                rows, episodes, len(new)),
        "ceiling": probe_ceiling(features, labels, rows, candidates, len(new)) if ceiling else None,
        "skipped": candidates.skipped + skip_log.count,
        "seconds": time.perf_counter() - clock,
    }
    if out is not None:
        Path(out).write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return result
