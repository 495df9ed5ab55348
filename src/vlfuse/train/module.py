"""The LightningModule for answer classification (VQA), and the optimiser every task shares."""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..data.vqa_dataset import IGNORE_INDEX
from ..losses.soft_score import dense_soft_targets, soft_score_bce


class VQAModule(L.LightningModule):
    def __init__(self, model: nn.Module, train_config: TrainConfig, total_steps: int):
        super().__init__()
        self.model, self.cfg, self.total_steps = model, train_config, max(1, total_steps)

    def _step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, int]:
        if "image_features" in batch:  # data.feature_cache: the frozen backbone's output, read from disk
            image = self.model.image_encoder.from_frozen(batch["image_features"])
            logits, _ = self.model.from_image_features(image, batch["input_ids"], batch["attention_mask"],
                                                       batch["image_index"], graph=batch.get("scene_graph"))
        else:
            logits, _ = self.model(batch["images"], batch["input_ids"], batch["attention_mask"], batch["image_index"],
                                   graph=batch.get("scene_graph"))
        labels = batch["labels"]
        correct = (logits.argmax(-1) == labels).sum()
        return self.loss(logits, batch), correct, labels.numel()

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """Cross-entropy on the answer class, or (head loss soft_bce) BCE on every answer's VQA soft score."""
        if getattr(self.model.head, "loss", "cross_entropy") == "soft_bce":
            return soft_score_bce(logits, dense_soft_targets(batch["soft_targets"], tuple(logits.shape)))
        return F.cross_entropy(logits, batch["labels"], ignore_index=IGNORE_INDEX)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, correct, n = self._step(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=n)
        self.log("train_acc", correct / n, prog_bar=True, batch_size=n)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, correct, n = self._step(batch)
        self.log("val_loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val_acc", correct / n, prog_bar=True, batch_size=n, sync_dist=True)

    def configure_optimizers(self):
        return configure_adamw(self.model, self.cfg, self.total_steps)


def configure_adamw(model: nn.Module, cfg: TrainConfig, total_steps: int) -> dict:
    """AdamW with linear warm-up then cosine decay to 0, stepped per batch; what every task trains with."""
    # No weight decay on biases, norms and embeddings (the usual transformer recipe).
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "embed" in name else decay).append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    warmup, total = cfg.warmup_steps, max(1, total_steps)

    def schedule(step: int) -> float:  # linear warm-up, then cosine decay to 0
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
