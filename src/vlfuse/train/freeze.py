"""train.freeze: parts of the model that keep their weights (no gradient) and run in eval mode."""

from __future__ import annotations

import lightning as L
from torch import nn

from ..errors import ConfigError


def frozen_parts(model: nn.Module, parts: list[str]) -> list[nn.Module]:
    """The modules `parts` names, or a ConfigError naming one the model lacks."""
    modules = []
    for part in parts:
        module = getattr(model, part, None)
        if not isinstance(module, nn.Module):
            raise ConfigError(f"config key 'train.freeze' names {part}, but this {type(model).__name__} has none")
        modules.append(module)
    return modules


def freeze(model: nn.Module, parts: list[str]) -> dict:
    """Stop `parts` of `model` from training; returns what stays trainable, for run.json."""
    for module in frozen_parts(model, parts):
        module.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"frozen": list(parts), "trainable_parameters": trainable}


class KeepFrozenInEval(L.Callback):
    """Lightning puts the whole model in train mode before each epoch; frozen parts go back to eval,
    so their dropout stays off and their outputs stay the fixed features they are meant to be."""

    def __init__(self, parts: list[str]):
        self.parts = parts

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        for module in frozen_parts(pl_module.model, self.parts):
            module.eval()
