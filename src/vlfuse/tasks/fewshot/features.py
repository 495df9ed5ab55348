"""The fused pooled representation (what the classifier head reads) of a saved model, per question."""

from __future__ import annotations

import torch

from ...data.formats.common import SkipLog
from ...data.vqa_dataset import GroupedVQADataset
from ...evaluate import scene_graph_collate
from ...models.saved import SavedModel
from ...progress import track


@torch.no_grad()
def pooled_features(saved: SavedModel, samples: list, skip_log: SkipLog, batch_images: int = 64,
                    progress: bool = True) -> tuple[torch.Tensor, dict[int, int]]:
    """([M, D] float32 features, {index in `samples`: row}); a question whose image would not decode has
    no row. Each image is encoded once for all of its questions, as in evaluation. A model trained with
    scene graphs runs on the images alone (scene_graph_collate says so)."""
    model = saved.model.eval()
    device = next(model.parameters()).device
    cfg = saved.config.data
    dataset = GroupedVQADataset(samples, saved.tokenizer, saved.answers, cfg.image_size, cfg.max_question_length,
                                skip_log, progress=progress, description="Loading few-shot images")
    collate = scene_graph_collate(saved, None)
    position = {id(s): i for i, s in enumerate(samples)}
    parts, rows = [], {}
    starts = range(0, len(dataset), batch_images)
    for start in track(starts, "Fused features", total=len(starts), enabled=progress):
        batch = collate([dataset[i] for i in range(start, min(start + batch_images, len(dataset)))])
        graph = batch.get("scene_graph")
        _, fused = model(batch["images"].to(device), batch["input_ids"].to(device),
                         batch["attention_mask"].to(device), batch["image_index"].to(device),
                         graph=None if graph is None else graph.to(device))
        parts.append(fused.pooled.float().cpu())
        for sample in batch["samples"]:
            rows[position[id(sample)]] = len(rows)
    dim = parts[0].shape[1] if parts else 0
    return (torch.cat(parts) if parts else torch.empty(0, dim)), rows
