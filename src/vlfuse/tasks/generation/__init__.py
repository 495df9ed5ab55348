"""Task generation: text -> image (a VQ-VAE and a caption-conditioned Transformer prior over its codes).

    vlfuse train configs/generation_shapes.yaml      (stage 1 VQ-VAE, then stage 2 prior, one run)
    vlfuse generate runs/generation_shapes/model --text "a red circle at the top left, ..." --out x.png
    vlfuse eval runs/generation_shapes/model         (object-level faithfulness on the test captions)
"""

from __future__ import annotations

import sys
from pathlib import Path

from ...config import Config
from ...data.caption_dataset import PairSampler, collate_pairs
from ...errors import ConfigError
from ...models.saved import save_vocabularies
from ...train.run import EpochDataModule, Prepared, steps_per_epoch, warn_skipped
from .data import caption_datasets, caption_tokenizer, read_train_val
from .evaluate import evaluate_split
from .module import GenerationModule
from .predict import build_generator, load_generator, generate
from .report import format_metrics

__all__ = ["prepare", "evaluate_split", "format_metrics", "generate", "load_generator"]


def prepare(config: Config, model_dir: Path, resume: bool, progress: bool) -> Prepared:
    """Model and data for the shared loop; the first generation.vq_epochs train the VQ-VAE, the rest the prior."""

    g, epochs = config.generation, config.train.epochs
    if g.vq_epochs >= epochs:
        raise ConfigError(f"config key 'generation.vq_epochs' ({g.vq_epochs}) must be below train.epochs ({epochs}): "
                    "the epochs after it train the prior")
    train_read, val_read = read_train_val(config)
    tokenizer = caption_tokenizer(train_read, model_dir, resume)
    save_vocabularies(model_dir, config, tokenizer, None)
    model = build_generator(config, tokenizer.get_vocab_size())
    train_set, val_set = caption_datasets(config, tokenizer, train_read, val_read, progress)
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
