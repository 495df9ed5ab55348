"""The learning curve: every method on every episode, then mean ± sd over seeds for each k."""

from __future__ import annotations

import statistics

import torch

from .data import Episode
from .methods import METHODS


def episode_accuracy(method: str, features: torch.Tensor, labels: torch.Tensor, rows: dict[int, int],
                     episode: Episode, classes: int) -> float:
    """Accuracy of `method` on the episode's query questions, learnt from its support questions (a
    question without features, its image undecodable, is left out of both)."""
    support = torch.tensor([rows[i] for i in episode.support if i in rows], dtype=torch.long)
    query = torch.tensor([rows[i] for i in episode.query if i in rows], dtype=torch.long)
    predicted = METHODS[method](features[support], labels[support], features[query], classes)
    return (predicted == labels[query]).float().mean().item()


def summarise(accuracies: list[float]) -> dict:
    """mean and sample sd (0 for one seed) of the per-seed accuracies, with the accuracies themselves."""
    sd = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    return {"mean": statistics.fmean(accuracies), "sd": sd, "accuracies": accuracies}


def learning_curve(features: torch.Tensor, labels: torch.Tensor, rows: dict[int, int], episodes: list[Episode],
                   methods: list[str], classes: int) -> dict[str, dict[str, dict]]:
    """{method: {str(k): {mean, sd, accuracies (one per seed)}}}; k as a string so it round-trips JSON."""
    curve: dict[str, dict[str, dict]] = {}
    for method in methods:
        by_k: dict[int, list[float]] = {}
        for episode in episodes:
            accuracy = episode_accuracy(method, features, labels, rows, episode, classes)
            by_k.setdefault(episode.shots, []).append(accuracy)
        curve[method] = {str(k): summarise(v) for k, v in sorted(by_k.items())}
    return curve


def baselines(labels: torch.Tensor, rows: dict[int, int], query: list[int], answers: list[str]) -> dict:
    """What a method must beat: chance over the new answers, and always saying the commonest."""
    truth = labels[[rows[i] for i in query if i in rows]]
    counts = torch.bincount(truth, minlength=len(answers))
    return {"chance": 1 / len(answers),
            "majority": {"answer": answers[int(counts.argmax())], "accuracy": counts.max().item() / len(truth)}}
