"""train.freeze: frozen parts get no gradient and stay in eval mode through Lightning's train()."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlfuse.errors import ConfigError
from vlfuse.train.freeze import KeepFrozenInEval, freeze


class TwoParts(nn.Module):
    def __init__(self):
        super().__init__()
        self.image_encoder = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
        self.fusion = nn.Sequential(nn.Linear(4, 2), nn.Dropout(0.5))


class Holder(nn.Module):  # what Lightning hands a callback: a module whose .model is the model
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model


def test_freeze_stops_the_gradient_of_the_named_parts_only():
    model = TwoParts()
    summary = freeze(model, ["image_encoder"])
    assert summary == {"frozen": ["image_encoder"], "trainable_parameters": 4 * 2 + 2}
    model.fusion(model.image_encoder(torch.ones(3, 4))).sum().backward()
    assert all(p.grad is None for p in model.image_encoder.parameters())
    assert all(p.grad is not None for p in model.fusion.parameters())


def test_frozen_parts_go_back_to_eval_mode_before_each_batch():
    holder = Holder(TwoParts())
    freeze(holder.model, ["image_encoder"])
    holder.train()  # as Lightning does at the start of every epoch
    KeepFrozenInEval(["image_encoder"]).on_train_batch_start(None, holder, None, 0)
    assert not any(m.training for m in holder.model.image_encoder.modules())
    assert all(m.training for m in holder.model.fusion.modules())
    x = torch.ones(2, 4)
    assert torch.equal(holder.model.image_encoder(x), holder.model.image_encoder(x))  # no dropout


def test_freezing_a_part_the_model_lacks_names_it():
    with pytest.raises(ConfigError, match="train.freeze.*text_encoder.*TwoParts"):
        freeze(TwoParts(), ["text_encoder"])
