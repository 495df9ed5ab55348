"""Evaluation of task vqa_mc: the highest-scoring candidate is the answer.

Metrics: accuracy over the questions (the Visual7W toolkit's multiple-choice measure), per question
type (Visual7W's W, VQA's question_type, the built-in families and their groups), the chance level
(mean of 1 / candidates), and where a question has several human answers (VQA multiple choice) the
official VQA accuracy of the chosen candidate.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ...config import Config
from ...data.formats.common import SkipLog
from ...data.records import VQASample
from ...data.vqa_dataset import IGNORE_INDEX
from ...metrics.vqa import vqa_accuracy
from ...models.saved import SavedModel
from ...progress import track
from ..base import write_eval_json
from ..vqa.evaluate import accuracy_table
from .data import MCDataset, collate_mc
from .module import MODEL_INPUTS, read_mc_split


@torch.no_grad()
def score_dataset(model, dataset: MCDataset, batch_images: int = 32, progress: bool = True
                  ) -> list[tuple[VQASample, tuple[str, ...], int | None, torch.Tensor]]:
    """(question, its candidates in scoring order, the true one's index or None, scores [C]) per question."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    starts = range(0, len(dataset), batch_images)
    for start in track(starts, "Scoring candidates", total=len(starts), enabled=progress):
        batch = collate_mc([dataset[i] for i in range(start, min(start + batch_images, len(dataset)))])
        scores, _ = model.choice_scores(*(batch[k].to(device) for k in MODEL_INPUTS))
        for sample, choices, label, row in zip(batch["samples"], batch["choices"], batch["labels"].tolist(),
                                               scores.cpu()):
            out.append((sample, choices, None if label == IGNORE_INDEX else label, row[: len(choices)]))
    return out


def mc_metrics(scores: list[torch.Tensor], truths: list[int], kinds: list[str]) -> dict:
    """Accuracy of the top-scoring candidate (a tie goes to the first listed), overall, per question type
    and type group; chance is the mean of 1 / candidates."""
    if not scores:
        return {"questions": 0, "accuracy": 0.0, "chance": 0.0, **accuracy_table([])}
    correct = [int(s.argmax()) == t for s, t in zip(scores, truths)]
    table = accuracy_table([{"family": k, "correct": c} for k, c in zip(kinds, correct)])
    return {"questions": len(scores), "accuracy": sum(correct) / len(correct),
            "chance": sum(1 / len(s) for s in scores) / len(scores), "choices": sorted({len(s) for s in scores}),
            **table}


def _records(scored: list) -> list[dict]:
    records = []
    for sample, choices, truth, scores in scored:
        best = int(scores.argmax())
        records.append({"question_id": sample.question_id, "image": str(sample.image_path),
                        "question": sample.question, "type": sample.question_type, "choices": list(choices),
                        "scores": [round(float(s), 4) for s in scores], "prediction": choices[best],
                        "truth": None if truth is None else choices[truth],
                        "correct": None if truth is None else best == truth})
    return records


def official_vqa(scored: list) -> dict | None:
    """The VQA accuracy of the chosen candidates, over the questions with several human answers."""
    values = [vqa_accuracy(choices[int(scores.argmax())], sample.answers)
              for sample, choices, truth, scores in scored if len(sample.answers) >= 2]
    return {"accuracy": sum(values) / len(values), "count": len(values)} if values else None


def evaluate_mc(saved: SavedModel, samples: list[VQASample], skip_log: SkipLog, dropped: int = 0,
                batch_images: int = 32, progress: bool = True) -> tuple[dict, list[dict]]:
    """(metrics, one record per question) of a vqa_mc model on `samples` (each with its candidates)."""
    data = saved.config.data
    dataset = MCDataset(samples, saved.tokenizer, data.image_size, data.max_question_length, skip_log, progress)
    clock = time.perf_counter()
    scored = score_dataset(saved.model, dataset, batch_images, progress)
    seconds = time.perf_counter() - clock
    labelled = [row for row in scored if row[2] is not None]
    metrics = {"task": "vqa_mc",
               **mc_metrics([s for *_, s in labelled], [t for _, _, t, _ in labelled],
                            [sample.question_type for sample, *_ in labelled]),
               "unlabelled": len(scored) - len(labelled), "without_choices": dropped,
               "ms_per_question": 1000 * seconds / max(len(scored), 1), "skipped": skip_log.as_dict()}
    if (official := official_vqa(labelled)) is not None:
        metrics["vqa_accuracy"] = official
    return metrics, _records(scored)


def evaluate_vqa_mc_split(model_dir: Path, config: Config, split: str, out_json: Path | None,
                          progress: bool = True) -> dict:
    """Evaluate the vqa_mc model in `model_dir` on one split of `config.data`; write metrics (+ each question's
    scores, OUT_predictions.jsonl)."""
    from ...models.saved import load_model_dir

    saved = load_model_dir(model_dir, task="vqa_mc")
    read, dropped = read_mc_split(config, split)
    metrics, records = evaluate_mc(saved, read.samples, read.skipped, dropped, config.vqa_mc.eval_batch, progress)
    return write_eval_json(out_json, metrics, records)
