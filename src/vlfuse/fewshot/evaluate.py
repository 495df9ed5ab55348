"""The learning curve: every method on every episode, then mean ± sd over seeds for each k."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

from .data import Candidates, Episode
from .features import Encoded
from .finetune import finetune_predict
from .methods import METHODS, linear_probe_predict

# predict(support rows, their labels, query rows, classes) -> predicted class per query row
Predict = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
ALL_METHODS = (*METHODS, "finetune")


def predictor(method: str, fusion: torch.nn.Module, encoded: Encoded, features: torch.Tensor) -> Predict:
    """The method as a function of question rows: the feature classifiers read the frozen features,
    finetune runs the fusion."""
    if method == "finetune":
        return lambda support, labels, query, classes: finetune_predict(fusion, encoded, support, labels, query,
                                                                        classes)
    classify = METHODS[method]
    return lambda support, labels, query, classes: classify(features[support], labels, features[query], classes)


def episode_accuracy(predict: Predict, labels: torch.Tensor, rows: dict[int, int], episode: Episode,
                     classes: int) -> float:
    """Accuracy on the episode's query questions, learnt from its support questions (a question
    without a row, its image undecodable, is left out of both)."""
    support = torch.tensor([rows[i] for i in episode.support if i in rows], dtype=torch.long)
    query = torch.tensor([rows[i] for i in episode.query if i in rows], dtype=torch.long)
    predicted = predict(support, labels[support], query, classes)
    return (predicted == labels[query]).float().mean().item()


def summarise(accuracies: list[float]) -> dict:
    """mean and sample sd (0 for one seed) of the per-seed accuracies, with the accuracies themselves."""
    sd = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    return {"mean": statistics.fmean(accuracies), "sd": sd, "accuracies": accuracies}


def learning_curve(predictors: dict[str, Predict], labels: torch.Tensor, rows: dict[int, int],
                   episodes: list[Episode], classes: int) -> dict[str, dict[str, dict]]:
    """{method: {str(k): {mean, sd, accuracies (one per seed)}}}; k as a string so it round-trips JSON."""
    curve: dict[str, dict[str, dict]] = {}
    for method, predict in predictors.items():
        by_k: dict[int, list[float]] = {}
        for episode in episodes:
            by_k.setdefault(episode.shots, []).append(episode_accuracy(predict, labels, rows, episode, classes))
        curve[method] = {str(k): summarise(v) for k, v in sorted(by_k.items())}
    return curve


def baselines(labels: torch.Tensor, rows: dict[int, int], query: list[int], answers: list[str]) -> dict:
    """What a method must beat: chance over the new answers, and always saying the commonest."""
    truth = labels[[rows[i] for i in query if i in rows]]
    counts = torch.bincount(truth, minlength=len(answers))
    return {"chance": 1 / len(answers),
            "majority": {"answer": answers[int(counts.argmax())], "accuracy": counts.max().item() / len(truth)}}


def probe_ceiling(features: torch.Tensor, labels: torch.Tensor, rows: dict[int, int], candidates: Candidates,
                  classes: int) -> dict | None:
    """The linear probe fitted on every support question of the new answers: what the frozen features
    tell apart at all, the limit of the feature methods. None when support and query share a split."""
    if candidates.same_split:
        return None
    support = torch.tensor([rows[i] for pool in candidates.pools.values() for i in pool if i in rows])
    query = torch.tensor([rows[i] for i in candidates.query if i in rows])
    predicted = linear_probe_predict(features[support], labels[support], features[query], classes)
    return {"examples": len(support), "accuracy": (predicted == labels[query]).float().mean().item()}
