"""A saved model's frozen encoders run once over the few-shot questions; the fusion then gives each
question's pooled representation (what the answer head reads), or is fine-tuned over them (finetune.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.formats.common import SkipLog
from ..data.vqa_dataset import GroupedVQADataset, collate_groups
from ..models.saved import SavedModel
from ..progress import track
from ..types import Features


@dataclass
class Encoded:
    """The encoders' output: one row per image, one per question, and which image each question is on."""

    images: Features
    questions: Features
    image_of: torch.Tensor  # [Q] long
    rows: dict[int, int]  # index in the samples given -> question row (an undecodable image's have none)


def _pad_cat(parts: list[Features]) -> Features:
    """Batches of Features with different token counts -> one, shorter rows padded (mask False)."""
    length = max(p.tokens.shape[1] for p in parts)

    def pad(t: torch.Tensor, value) -> torch.Tensor:
        return F.pad(t, (0, 0, 0, length - t.shape[1]) if t.dim() == 3 else (0, length - t.shape[1]), value=value)

    boxes = None if parts[0].boxes is None else torch.cat([pad(p.boxes, 0.0) for p in parts])
    return Features(torch.cat([pad(p.tokens, 0.0) for p in parts]), torch.cat([pad(p.mask, False) for p in parts]),
                    torch.cat([p.pooled for p in parts]), boxes)


def _float(f: Features) -> Features:
    return Features(f.tokens.float().cpu(), f.mask.cpu(), f.pooled.float().cpu(),
                    None if f.boxes is None else f.boxes.float().cpu())


@torch.no_grad()
def encode(saved: SavedModel, samples: list, skip_log: SkipLog, batch_images: int = 64,
           progress: bool = True) -> Encoded:
    """Image and text encoder outputs for `samples`, each image encoded once for all of its questions.
    A model trained with scene graphs runs on the images alone (few-shot reads no graphs)."""
    model = saved.model.eval()
    device = next(model.parameters()).device
    cfg = saved.config.data
    dataset = GroupedVQADataset(samples, saved.tokenizer, saved.answers, cfg.image_size, cfg.max_question_length,
                                skip_log, progress=progress, description="Loading few-shot images")
    position = {id(s): i for i, s in enumerate(samples)}
    images, questions, image_of, rows = [], [], [], {}
    starts = range(0, len(dataset), batch_images)
    for start in track(starts, "Encoding", total=len(starts), enabled=progress):
        batch = collate_groups([dataset[i] for i in range(start, min(start + batch_images, len(dataset)))])
        images.append(_float(model.image_encoder(batch["images"].to(device).float() / 255)))
        questions.append(_float(model.text_encoder(batch["input_ids"].to(device), batch["attention_mask"].to(device))))
        image_of.append(batch["image_index"] + start)
        for sample in batch["samples"]:
            rows[position[id(sample)]] = len(rows)
    if not rows:
        empty = Features(torch.empty(0, 0, 0), torch.empty(0, 0, dtype=torch.bool), torch.empty(0, 0))
        return Encoded(empty, empty, torch.empty(0, dtype=torch.long), rows)
    return Encoded(_pad_cat(images), _pad_cat(questions), torch.cat(image_of), rows)


def fused_pooled(fusion: torch.nn.Module, encoded: Encoded, questions: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """[len(questions), D] pooled fusion output of the question rows `questions` (with gradients when
    enabled: fine-tuning runs through here)."""
    device = next(fusion.parameters()).device
    parts = []
    for start in range(0, len(questions), chunk):
        rows = questions[start: start + chunk]
        image = encoded.images.index_select(encoded.image_of[rows])
        text = encoded.questions.index_select(rows)
        image, text = (Features(f.tokens.to(device), f.mask.to(device), f.pooled.to(device),
                                None if f.boxes is None else f.boxes.to(device)) for f in (image, text))
        parts.append(fusion(image, text).pooled.float())
    return torch.cat(parts) if parts else torch.empty(0, 0)


@torch.no_grad()
def pooled_features(saved: SavedModel, encoded: Encoded) -> torch.Tensor:
    """[Q, D] the frozen model's fused pooled features of every encoded question."""
    return fused_pooled(saved.model.eval().fusion, encoded, torch.arange(len(encoded.image_of)))
