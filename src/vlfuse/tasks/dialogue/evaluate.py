"""Task dialogue's evaluation: each round's candidates ranked by score; MRR, R@1/5/10 and mean rank,
overall and per question family."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch

from ...config import Config
from ...data.dialog_dataset import DialogDataset, collate_dialogs
from ...data.formats.common import SkipLog
from ...data.loading import read_split
from ...data.records import DialogSample
from ...errors import DataError
from ...metrics.ranking import answer_ranks, ranking_metrics
from ...models.dialogue import DialogueModel
from ...models.saved import SavedModel, load_model_dir
from ...progress import track
from ..base import write_eval_json
from .data import MODEL_INPUTS, make_dataset, score_batch


@torch.no_grad()
def score_dataset(model: DialogueModel, dataset: DialogDataset, batch: int = 16, progress: bool = True
                  ) -> list[tuple[DialogSample, int, torch.Tensor]]:
    """(dialogue, round, scores [C]) for every round of `dataset`, in order."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    starts = range(0, len(dataset), batch)
    for start in track(starts, "Scoring dialogues", total=len(starts), enabled=progress):
        items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        data = collate_dialogs(items, with_samples=True)
        scores = score_batch(model, {k: data[k].to(device) for k in MODEL_INPUTS}).float().cpu()
        for (sample, t), row in zip(data["rounds"], scores):
            out.append((sample, t, row[: len(sample.rounds[t].options)]))
    return out


def _ranking(rows: list[tuple[torch.Tensor, int]]) -> dict:
    """ranking_metrics over rounds that may differ in candidate count (K capped at the fewest)."""
    by_width = defaultdict(list)
    for scores, gt in rows:
        by_width[len(scores)].append((scores, gt))
    ks = tuple(k for k in (1, 5, 10) if k <= min(by_width))
    ranks = torch.cat([answer_ranks(torch.stack([s for s, _ in group]), torch.tensor([g for _, g in group]))
                       for group in by_width.values()]).double()
    out = {"rounds": len(ranks), "mrr": (1.0 / ranks).mean().item()}
    out.update({f"r{k}": (ranks <= k).double().mean().item() for k in ks})
    out["mean_rank"] = ranks.mean().item()
    return out


def evaluate_dialogue(saved: SavedModel, samples: list[DialogSample], skip_log: SkipLog, batch: int = 16,
                      progress: bool = True) -> tuple[dict, list[dict]]:
    """(metrics, one record per round) of candidate ranking over `samples`."""
    dataset = make_dataset(samples, saved.tokenizer, saved.config, skip_log, progress, "Loading images")
    scored = score_dataset(saved.model, dataset, batch, progress)
    labelled = [(scores, sample.rounds[t].gt_index, sample, t) for sample, t, scores in scored
                if sample.rounds[t].gt_index is not None]
    if not labelled:
        raise DataError("no dialogue rounds with a ground-truth answer to evaluate"
                        + (f" ({skip_log.summary()})" if skip_log.count else ""))
    widths = {len(s) for s, *_ in labelled}
    if len(widths) == 1:  # the usual case (VisDial: 100 each): the library function, as is
        width = widths.pop()
        ks = tuple(k for k in (1, 5, 10) if k <= width)
        metrics = ranking_metrics(torch.stack([s for s, *_ in labelled]), torch.tensor([g for _, g, *_ in labelled]),
                                  ks)
        metrics = {"rounds": len(labelled), **metrics}
    else:
        metrics = _ranking([(s, g) for s, g, *_ in labelled])
    families = defaultdict(list)
    for scores, gt, sample, t in labelled:
        family = sample.rounds[t].extra.get("family")
        if isinstance(family, str):
            families[family].append((scores, gt))
    result = {"task": "dialogue", "dialogs": len(dataset), "candidates": sorted({len(s) for *_, s in scored}),
              **metrics, "unlabelled_rounds": len(scored) - len(labelled),
              "families": {f: _ranking(rows) for f, rows in sorted(families.items())},
              "skipped": skip_log.as_dict()}
    records = []
    for sample, t, scores in scored:
        r = sample.rounds[t]
        top = scores.topk(min(5, len(scores))).indices.tolist()
        record = {"image_id": sample.image_id, "round": t, "question": r.question, "answer": r.answer,
                  "top": [r.options[i] for i in top]}
        if r.gt_index is not None:
            record["rank"] = int((scores >= scores[r.gt_index]).sum())
        records.append(record)
    return result, records


def evaluate_dialogue_split(model_dir: Path, config: Config, split: str, out_json: Path | None,
                            progress: bool = True) -> dict:
    """Evaluate the dialogue model in `model_dir` on one split of `config.data`; write metrics (+ rankings)."""
    read = read_split(config.data, split)
    saved = load_model_dir(model_dir, task="dialogue")
    metrics, records = evaluate_dialogue(saved, read.samples, read.skipped, config.dialogue.eval_batch, progress)
    return write_eval_json(out_json, metrics, records, "rankings")
