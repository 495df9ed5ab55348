"""Distributed settings: the shipped DDP / FSDP configs validate, and the LR schedule counts each
process's share of the data."""

import pytest

from vlfuse.config import load_config
from vlfuse.train.run import RunDirs, make_trainer, steps_per_epoch
from conftest import REPO

CONFIGS = REPO / "configs" / "distributed"


@pytest.mark.parametrize("name, strategy", [("ddp.yaml", "ddp"), ("fsdp.yaml", "fsdp"), ("ddp_cpu.yaml", "ddp")])
def test_shipped_distributed_configs_validate(name, strategy):
    config = load_config(CONFIGS / name, [])
    assert config.train.strategy == strategy
    assert config.model.fusion["name"] == "cross_attention"  # inherits the benchmark model


@pytest.mark.parametrize("strategy, devices, nodes, expected", [
    ("auto", 4, 1, 32),  # one process: it sees every item
    ("ddp", 4, 1, 8),
    ("ddp", 4, 2, 4),
    ("fsdp", 2, 2, 8),
    ("ddp_find_unused_parameters_true", 2, 1, 16),
])
def test_steps_per_epoch_divides_items_among_processes(tiny_config, tmp_path, strategy, devices, nodes, expected):
    config = tiny_config(tmp_path, tmp_path / "run")
    config.train.batch_images, config.train.strategy = 32, strategy
    config.train.devices, config.train.num_nodes = devices, nodes
    assert steps_per_epoch(config, 1024) == expected


def test_trainer_gets_num_nodes(tiny_config, tmp_path):
    config = tiny_config(tmp_path, tmp_path / "run", "train.accelerator=cpu", "train.num_nodes=1")
    trainer = make_trainer(config, RunDirs(tmp_path), progress=False)
    assert trainer.num_nodes == 1


def test_num_nodes_must_be_an_integer(write_config, tmp_path):
    from vlfuse.errors import ConfigError

    with pytest.raises(ConfigError, match="num_nodes"):
        load_config(write_config(tmp_path / "c.yaml", tmp_path, tmp_path / "run"), ["train.num_nodes=two"])


def test_a_device_setup_lightning_refuses_is_a_config_error(tiny_config, tmp_path):
    from vlfuse.errors import ConfigError

    config = tiny_config(tmp_path, tmp_path / "run", "train.accelerator=cpu", "train.strategy=fsdp")
    with pytest.raises(ConfigError, match="strategy=fsdp.*requires a GPU"):
        make_trainer(config, RunDirs(tmp_path), progress=False)
