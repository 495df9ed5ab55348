"""Task vqa's evaluation: accuracy overall, per question family and per family group (and the official
VQA accuracy where samples carry human answers), with every prediction kept."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ...config import Config
from ...data.answers import normalize_answer
from ...data.cached_inputs import cached_inputs
from ...data.feature_cache import feature_loader
from ...data.formats.common import SkipLog
from ...data.knowledge_graph import evaluation_knowledge_graph, image_knowledge_graphs
from ...data.loading import read_split
from ...data.records import VQASample
from ...data.scene_graph import read_scene_graphs
from ...data.vqa_dataset import GroupedVQADataset, collate_groups, group_by_image
from ...models.saved import SavedModel, load_model_dir
from ...progress import track
from ..base import write_eval_json
from .module import answer_logits


def family_groups() -> dict[str, str]:
    from ...data.shapes import FAMILY_GROUP

    return dict(FAMILY_GROUP)


def accuracy_table(records: list[dict]) -> dict:
    """records: [{"family": str, "correct": bool}] -> {"overall", "groups", "families"} with accuracy and count."""
    groups_of = family_groups()

    def summarise(flags: list[bool]) -> dict:
        return {"accuracy": sum(flags) / len(flags) if flags else 0.0, "count": len(flags)}

    by_family, by_group = defaultdict(list), defaultdict(list)
    for r in records:
        by_family[r["family"]].append(r["correct"])
        if r["family"] in groups_of:
            by_group[groups_of[r["family"]]].append(r["correct"])
    families = {f: {**summarise(v), **({"group": groups_of[f]} if f in groups_of else {})}
                for f, v in sorted(by_family.items(), key=lambda kv: list(groups_of).index(kv[0])
                                   if kv[0] in groups_of else len(groups_of))}
    group_order = list(dict.fromkeys(groups_of.values()))
    groups = {g: summarise(by_group[g]) for g in group_order if g in by_group}
    return {"overall": summarise([r["correct"] for r in records]), "groups": groups, "families": families}


def evaluation_batches(dataset, batch_images: int, collate, device, progress: bool = True) -> Iterator[dict]:
    """`dataset` in order, `batch_images` items a batch, collated and on `device`."""
    starts = range(0, len(dataset), batch_images)
    for start in track(starts, "Evaluating", total=len(starts), enabled=progress):
        batch = collate([dataset[i] for i in range(start, min(start + batch_images, len(dataset)))])
        yield {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


def evaluation_dataset(saved: SavedModel, samples: list[VQASample], skip_log: SkipLog, collate, progress: bool,
                       cache_config: Config | None = None) -> tuple[GroupedVQADataset, Dataset, Callable]:
    """(the dataset of `samples` grouped by image, the items evaluation reads, their collate). With
    cache_config.data.feature_cache, the frozen encoders' outputs come from (and go to) that cache: the
    items carry cached image features and text states, the same numbers without running the frozen parts."""
    cfg, model = saved.config.data, saved.model
    cached = cache_config is not None and bool(cache_config.data.feature_cache)
    loader = feature_loader(cache_config, model.image_encoder, samples, progress) if cached else None
    dataset = GroupedVQADataset(samples, saved.tokenizer, saved.answers, cfg.image_size, cfg.max_question_length,
                                skip_log, progress=progress, image_loader=loader)
    if not cached:
        return dataset, dataset, collate
    (items,), collate = cached_inputs(cache_config, model.text_encoder, [dataset], collate, progress)
    return dataset, items, collate


@torch.no_grad()
def predict_dataset(saved: SavedModel, dataset: Dataset, batch_images: int = 64, top_k: int = 1,
                    progress: bool = True, collate=collate_groups) -> list[dict]:
    """One record per question: question, answer, prediction, confidence, correct, family, image."""
    model, answers = saved.model.eval(), saved.answers
    device = next(model.parameters()).device
    records = []
    for batch in evaluation_batches(dataset, batch_images, collate, device, progress):
        probs = answer_logits(model, batch).float().softmax(-1)
        conf, pred = probs.max(-1)
        for sample, p, c in zip(batch["samples"], pred.tolist(), conf.tolist()):
            truth = None if sample.answer is None else normalize_answer(sample.answer)
            records.append({"question_id": sample.question_id, "image": str(sample.image_path),
                            "question": sample.question, "family": sample.question_type, "truth": truth,
                            "prediction": answers[p], "confidence": c, "correct": truth == answers[p],
                            "answers": list(sample.answers), "answer_type": sample.answer_type})
    return records


def scene_graph_collate(saved: SavedModel, scene_graphs: dict | None, knowledge_graphs: dict | None = None):
    """collate_groups, plus the images' scene graphs when given (joined with each image's knowledge graph,
    `knowledge_graphs`, else the model's); a model trained with scene graphs and evaluated without them is
    said so (it runs on the image alone)."""
    if scene_graphs is None:
        if saved.config.data.scene_graphs:
            print(f"warning: this model was trained with scene graphs (data.scene_graphs: "
                  f"{saved.config.data.scene_graphs}) but the evaluation data has none: answering from the "
                  "images alone", file=sys.stderr)
        return collate_groups
    if not saved.config.data.scene_graphs:
        print("warning: this model was trained without scene graphs: the evaluation data's are ignored",
              file=sys.stderr)
        return collate_groups
    from ...data.knowledge_graph import encode_for_model
    from ...data.scene_graph import SceneGraphCollate

    return SceneGraphCollate(collate_groups, encode_for_model(scene_graphs, saved, knowledge_graphs))


def official_vqa_accuracy(records: list[dict]) -> dict | None:
    """The VQA v2 accuracy (min(#humans who gave the answer / 3, 1), averaged over the leave-one-out
    annotator subsets, official answer normalisation), overall and per answer type, over the questions
    that have several human answers; None when none has (then exact match, "overall", is the metric)."""
    from ...metrics.vqa import vqa_evaluate

    scored = [r for r in records if len(r["answers"]) >= 2]
    if not scored:
        return None
    result = vqa_evaluate([r["prediction"] for r in scored], [r["answers"] for r in scored],
                          [r["answer_type"] for r in scored])
    return {"accuracy": result["overall"], "per_answer_type": result["per_answer_type"], "count": len(scored)}


def evaluate_samples(saved: SavedModel, samples: list[VQASample], skip_log: SkipLog, batch_images: int = 64,
                     progress: bool = True, scene_graphs: dict | None = None, chunk_images: int = 2048,
                     cache_config: Config | None = None, knowledge_graphs: dict | None = None) -> tuple[dict, list[dict]]:
    """(metrics, per-question records) for samples that have answers; scene_graphs: each image's
    SceneGraph by image path (vlfuse.data.scene_graph), for a model trained with them; cache_config: a
    config whose data.feature_cache serves the frozen encoders' outputs (`evaluation_dataset`);
    knowledge_graphs: each image's KnowledgeGraph (data.knowledge_graph: per_sample).

    Images are decoded `chunk_images` at a time, so a split of any size evaluates in bounded memory.
    """
    groups = group_by_image([s for s in samples if s.answer is not None])
    collate = scene_graph_collate(saved, scene_graphs, knowledge_graphs)
    records, seconds, unanswerable = [], 0.0, 0
    for first in range(0, len(groups), chunk_images):
        chunk = [s for group in groups[first:first + chunk_images] for s in group.samples]
        dataset, items, chunk_collate = evaluation_dataset(saved, chunk, skip_log, collate, progress, cache_config)
        start = time.perf_counter()
        records += predict_dataset(saved, items, batch_images, progress=progress, collate=chunk_collate)
        seconds += time.perf_counter() - start
        unanswerable += dataset.unanswerable
    metrics = accuracy_table(records)
    official = official_vqa_accuracy(records)
    if official:
        metrics["vqa_accuracy"] = official
    # model time only (images are decoded before the clock starts), batched as in evaluation
    metrics["ms_per_question"] = 1000 * seconds / max(len(records), 1)
    metrics["unanswerable"] = unanswerable  # truth not among the model's answers: always wrong
    metrics["skipped"] = skip_log.as_dict()
    return metrics, records


def evaluate_vqa_split(model_dir: Path, config: Config, split: str, out_json: Path | None, progress: bool) -> dict:
    """Task vqa: accuracy overall, per group and per question family, plus each prediction."""
    read = read_split(config.data, split)
    graphs = read_scene_graphs(config.data, split, read.samples) if config.data.scene_graphs else None
    saved = evaluation_knowledge_graph(load_model_dir(model_dir), config)  # the saved graph, or the one config names
    per_image = image_knowledge_graphs(saved, config, split, read.samples) if graphs else None
    metrics, records = evaluate_samples(saved, read.samples, read.skipped, progress=progress, scene_graphs=graphs,
                                        cache_config=config, knowledge_graphs=per_image)
    return write_eval_json(out_json, metrics, records)
