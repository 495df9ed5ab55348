"""Task pretrain's evaluation: each objective's loss and accuracy over a split."""

from __future__ import annotations

from pathlib import Path

import torch

from ...config import Config
from ...data.caption_dataset import CaptionDataset, collate_pairs
from ...data.loading import read_split
from ...errors import DataError
from ...models.pretrain import PretrainModel
from ...progress import track
from ..base import write_eval_json
from .model import load_pretrained_dir


@torch.no_grad()
def evaluate_pretrain(model: PretrainModel, dataset: CaptionDataset, batch: int = 64, seed: int = 0,
                      progress: bool = True) -> dict:
    """Each objective's loss and accuracy averaged over `dataset` (pairs in order, fixed masks)."""
    model.eval()
    device = next(model.parameters()).device
    totals: dict[str, float] = {}
    count = 0
    starts = range(0, len(dataset), batch)
    for k, start in enumerate(track(starts, "Evaluating objectives", total=len(starts), enabled=progress)):
        items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        if len(items) < 2:  # a last batch of one has no negatives
            continue
        pairs = collate_pairs(items)
        pairs = {key: value.to(device) for key, value in pairs.items()}
        out = model.losses(pairs, torch.Generator(device=device).manual_seed(seed * 1_000_003 + k))
        for name, value in out.items():
            totals[name] = totals.get(name, 0.0) + float(value) * len(items)
        count += len(items)
    return {name: total / max(1, count) for name, total in totals.items()}


def evaluate_pretrain_split(model_dir: Path, config: Config, split: str, out_json: Path | None,
                            progress: bool = True) -> dict:
    """Pre-training losses and accuracies of the model in `model_dir` on one split of `config.data`."""
    model, saved_config, tokenizer = load_pretrained_dir(model_dir)
    read = read_split(config.data, split)
    data = saved_config.data
    dataset = CaptionDataset(read.samples, tokenizer, data.image_size, data.max_question_length, read.skipped,
                             progress)
    if len(dataset) < 2:
        raise DataError(f"need at least 2 captioned images to evaluate pre-training, found {len(dataset)}")
    metrics = {"task": "pretrain", "split": split, "images": len(dataset),
               **evaluate_pretrain(model, dataset, config.train.batch_images, config.seed, progress),
               "skipped": read.skipped.as_dict()}
    return write_eval_json(out_json, metrics)
