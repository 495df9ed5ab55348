"""Task generation's LightningModule: one run, two stages.

Steps before `vq_steps` train the VQ-VAE (reconstruction + commitment; the codebook follows its
moving averages); the steps after train the prior on the frozen VQ-VAE's codes (cross-entropy of
each code given the caption and the codes before it). The stage is a function of the global step,
so a resumed run picks up in the right one. Each stage has its own warm-up and cosine decay.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from ...config import Config, GenerationConfig, TrainConfig
from ...data.caption_dataset import PairSampler, collate_pairs
from ...errors import ConfigError
from ...models.saved import save_vocabularies
from ...train.optim import configure_adamw, stage_schedule, with_schedule
from ...train.run import EpochDataModule, Prepared, steps_per_epoch, warn_skipped
from ..base import TaskModule
from .data import caption_datasets, caption_tokenizer, read_train_val
from .model import TextToImage, fit_palette
from .predict import build_generator


class GenerationModule(TaskModule):
    def __init__(self, model: TextToImage, task: GenerationConfig, train_config: TrainConfig, vq_steps: int,
                 total_steps: int):
        super().__init__(model, train_config, max(vq_steps + 1, total_steps))
        self.task, self.vq_steps = task, vq_steps

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
                    "reconstruction": out["reconstruction"], "mse": out["mse"], "commitment": out["commitment"],
                    "codes_used": torch.tensor(used)}
        self.model.vqvae.eval()  # frozen: no codebook updates, no gradient
        with torch.no_grad():
            codes = self.model.vqvae.encode(images)
        drop = None
        if self.training and self.task.caption_dropout:  # "no caption" rows: what guidance compares with
            drop = torch.rand(len(codes), device=codes.device) < self.task.caption_dropout
        logits = self.model.prior(codes, batch["input_ids"], batch["attention_mask"], drop).float()
        ce = F.cross_entropy(logits.flatten(0, 1), codes.flatten())
        accuracy = (logits.argmax(-1) == codes.flatten(1)).float().mean()
        return {"loss": ce, "prior_ce": ce, "prior_acc": accuracy}

    def batch_size(self, batch: dict) -> int:
        return len(batch["images"])

    def configure_optimizers(self):
        return with_schedule(configure_adamw(self.model, self.cfg, self.total_steps),
                             stage_schedule(self.cfg.warmup_steps, self.vq_steps, self.total_steps))


def prepare_generation(config: Config, model_dir: Path, resume: bool, progress: bool) -> Prepared:
    """Model and data for the shared loop; the first generation.vq_epochs train the VQ-VAE, the rest the prior."""
    g, epochs = config.generation, config.train.epochs
    if g.vq_epochs >= epochs:
        raise ConfigError(f"config key 'generation.vq_epochs' ({g.vq_epochs}) must be below train.epochs ({epochs}): "
                    "the epochs after it train the prior")
    train_read, val_read = read_train_val(config)
    tokenizer = caption_tokenizer(train_read, model_dir, resume)
    save_vocabularies(model_dir, config, tokenizer, None)
    if g.palette == 1 or g.palette < 0:
        raise ConfigError(f"config key 'generation.palette' must be 0 (paint RGB) or at least 2 colours, got {g.palette}")
    model = build_generator(config, tokenizer.get_vocab_size())
    train_set, val_set = caption_datasets(config, tokenizer, train_read, val_read, progress)
    if g.palette and not resume:  # a resumed run reads its palette back with its weights
        model.vqvae.palette.copy_(fit_palette(train_set.images, g.palette, config.seed))
    warn_skipped(train=train_read, val=val_read)
    per_epoch = steps_per_epoch(config, len(train_set))
    vq_steps, total = per_epoch * g.vq_epochs, per_epoch * epochs
    print(f"generation: stage 1 (VQ-VAE) epochs 1-{g.vq_epochs}, steps 1-{vq_steps}; stage 2 (prior) epochs "
          f"{g.vq_epochs + 1}-{epochs}, steps {vq_steps + 1}-{total}", file=sys.stderr)
    module = GenerationModule(model, g, config.train, vq_steps, total)

    def save() -> None:
        from safetensors.torch import save_model

        save_vocabularies(model_dir, config, tokenizer, None)
        save_model(model.cpu(), str(Path(model_dir) / "model.safetensors"))

    summary = {"task": "generation", "train_images": len(train_set),
               "val_images": None if val_set is None else len(val_set), "vocab": tokenizer.get_vocab_size(),
               "vq_steps": vq_steps, "prior_steps": total - vq_steps,
               "parameters": {"vqvae": sum(p.numel() for p in model.vqvae.parameters()),
                              "prior": sum(p.numel() for p in model.prior.parameters())}}
    datamodule = EpochDataModule(train_set, val_set, config, collate_pairs, PairSampler)
    return Prepared(module, datamodule, save, summary)
