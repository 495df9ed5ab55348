"""Task generation's LightningModule: one run, two stages.

Steps before `vq_steps` train the VQ-VAE (reconstruction + commitment; the codebook follows its
moving averages); the steps after train the prior on the frozen VQ-VAE's codes (cross-entropy of
each code given the caption and the codes before it). The stage is a function of the global step,
so a resumed run picks up in the right one. Each stage has its own warm-up and cosine decay.
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F

from ...config import GenerationConfig, TrainConfig
from ...train.module import configure_adamw
from .model import TextToImage


def stage_schedule(warmup: int, vq_steps: int, total_steps: int):
    """LR factor of a step: warm-up then cosine to 0, restarted when the prior's stage begins."""
    def factor(step: int) -> float:
        start, end = (0, vq_steps) if step < vq_steps else (vq_steps, total_steps)
        local, length = step - start, max(1, end - start)
        if local < warmup:
            return (local + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (local - warmup) / max(1, length - warmup))))
    return factor


class GenerationModule(L.LightningModule):
    def __init__(self, model: TextToImage, task: GenerationConfig, train_config: TrainConfig, vq_steps: int,
                 total_steps: int):
        super().__init__()
        self.model, self.task, self.cfg = model, task, train_config
        self.vq_steps, self.total_steps = vq_steps, max(vq_steps + 1, total_steps)

    @property
    def stage(self) -> str:
        return "vq" if self.global_step < self.vq_steps else "prior"

    def losses(self, batch: dict, stage: str | None = None) -> dict[str, torch.Tensor]:
        """{"loss", ...} of one batch in `stage` (default: the current one); the first key is what is minimised."""
        images = batch["images"].float() / 255
        if (stage or self.stage) == "vq":
            out = self.model.vqvae(images)
            used = out["codes"].unique().numel() / self.task.codes
            return {"loss": out["reconstruction"] + self.task.commitment * out["commitment"],
                    "reconstruction": out["reconstruction"], "commitment": out["commitment"],
                    "codes_used": torch.tensor(used)}
        self.model.vqvae.eval()  # frozen: no codebook updates, no gradient
        with torch.no_grad():
            codes = self.model.vqvae.encode(images)
        logits = self.model.prior(codes, batch["input_ids"], batch["attention_mask"]).float()
        ce = F.cross_entropy(logits.flatten(0, 1), codes.flatten())
        accuracy = (logits.argmax(-1) == codes.flatten(1)).float().mean()
        return {"loss": ce, "prior_ce": ce, "prior_acc": accuracy}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.losses(batch)
        for key, value in out.items():
            self.log(f"train_{key}", value, prog_bar=key == "loss", batch_size=len(batch["images"]))
        return out["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        for key, value in self.losses(batch).items():
            self.log(f"val_{key}", value, prog_bar=key == "loss", batch_size=len(batch["images"]), sync_dist=True)

    def configure_optimizers(self):
        config = configure_adamw(self.model, self.cfg, self.total_steps)
        schedule = stage_schedule(self.cfg.warmup_steps, self.vq_steps, self.total_steps)
        config["lr_scheduler"]["scheduler"] = torch.optim.lr_scheduler.LambdaLR(config["optimizer"], schedule)
        return config
