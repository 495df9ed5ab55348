"""Config loading and validation, and the factory's checks: every error is a ConfigError naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vlfuse.config import Config, SplitConfig, load_config, to_dict
from vlfuse.errors import ConfigError, VLFuseError
from vlfuse.models.factory import FUSIONS, build_model


def test_defaults_load():
    config = load_config()
    assert config == Config()
    assert config.train.lr == 1e-3 and isinstance(config.train.lr, float)
    assert config.data.format == "vqa_v2"
    assert config.data.val is None
    assert config.model.fusion["name"] in FUSIONS


def test_configs_are_independent():
    a, b = load_config(), load_config()
    a.model.fusion["name"] = "changed"
    assert b.model.fusion["name"] != "changed"
    assert Config().model.fusion["name"] != "changed"


def test_yaml_round_trip(tmp_path):
    config = load_config(None, ["train.lr=0.0003", "data.val={path: val.jsonl}", "data.format=jsonl",
                                "model.fusion={name: cross_attention, layers: 1}", "train.max_minutes=2.5"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(to_dict(config)), encoding="utf-8")
    again = load_config(path)
    assert again == config
    assert again.data.val == SplitConfig(path="val.jsonl")
    assert again.model.fusion == {"name": "cross_attention", "layers": 1}


def test_yaml_file_values_and_overrides_on_top(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n  lr: 0.01\ndata:\n  image_size: 32\n", encoding="utf-8")
    config = load_config(path, ["train.lr=0.0005"])
    assert config.train.epochs == 3
    assert config.data.image_size == 32
    assert config.train.lr == 0.0005
    assert config.train.weight_decay == Config().train.weight_decay  # untouched keys keep defaults


def test_empty_yaml_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n", encoding="utf-8")
    assert load_config(path) == Config()


def test_set_overrides_parse_values():
    config = load_config(None, ["train.lr=0.0003", "model.fusion={name: concat}", "data.val=null",
                                "train.epochs=7", "train.progress_bar=false", "out_dir=runs/x",
                                "train.grad_clip=2"])
    assert config.train.lr == 3e-4 and isinstance(config.train.lr, float)
    assert load_config(None, ["train.lr=3.0e-4"]).train.lr == 3e-4
    assert config.model.fusion == {"name": "concat"}
    assert config.data.val is None
    assert config.train.epochs == 7
    assert config.train.progress_bar is False
    assert config.out_dir == "runs/x"
    assert config.train.grad_clip == 2.0 and isinstance(config.train.grad_clip, float)  # int -> float



def test_set_exponent_float_without_dot():
    config = load_config(None, ["train.lr=3e-4"])
    assert config.train.lr == 3e-4 and isinstance(config.train.lr, float)


def test_yaml_file_exponent_float_without_dot(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n", encoding="utf-8")
    assert load_config(path).train.lr == 1e-3


def test_set_later_override_wins():
    assert load_config(None, ["train.epochs=2", "train.epochs=5"]).train.epochs == 5


def test_config_error_is_a_value_error_and_vlfuse_error():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, VLFuseError)


def _error(overrides=(), path=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides))
    return str(info.value)


def test_unknown_top_level_key():
    msg = _error(["trian.lr=1"])
    assert "'trian'" in msg and "train" in msg


def test_unknown_nested_key_suggests_close_match():
    msg = _error(["train.epoch=3"])
    assert "train.epoch" in msg and "did you mean 'epochs'" in msg


def test_unknown_nested_key_lr_rate_names_lr():
    msg = _error(["train.lr_rate=0.1"])
    assert "train.lr_rate" in msg
    assert "lr" in msg.replace("lr_rate", "")


def test_unknown_nested_key_lr_rate_suggests_lr():
    assert "did you mean 'lr'" in _error(["train.lr_rate=0.1"])


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  imag_size: 32\n", encoding="utf-8")
    msg = _error(path=path)
    assert "data.imag_size" in msg and "image_size" in msg


@pytest.mark.parametrize("override, key", [
    ("train.epochs=ten", "train.epochs"),
    ("train.epochs=true", "train.epochs"),       # bool is not an int
    ("train.lr=true", "train.lr"),               # nor a float
    ("data.image_size=3.5", "data.image_size"),  # float -> int would lose information
    ("out_dir=[a, b]", "out_dir"),
    ("model.fusion=[1, 2]", "model.fusion"),
])
def test_wrong_type_names_the_key(override, key):
    msg = _error([override])
    assert f"'{key}'" in msg


def test_wrong_type_in_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text('train:\n  epochs: "ten"\n', encoding="utf-8")
    msg = _error(path=path)
    assert "train.epochs" in msg and "ten" in msg


def test_literal_violation():
    msg = _error(["data.format=coco"])
    assert "data.format" in msg and "coco" in msg and "vqa_v2" in msg and "jsonl" in msg


@pytest.mark.parametrize("override, key", [("train=5", "train"), ("data.train=[1]", "data.train")])
def test_non_mapping_section(override, key):
    msg = _error([override])
    assert f"'{key}'" in msg and "mapping" in msg


def test_non_mapping_top_level_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- 1\n- 2\n", encoding="utf-8")
    msg = _error(path=path)
    assert "mapping" in msg and str(path) in msg


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {epochs: 3\n  lr: [\n", encoding="utf-8")
    msg = _error(path=path)
    assert str(path) in msg and "YAML" in msg


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    msg = _error(path=path)
    assert "not found" in msg and str(path) in msg


@pytest.mark.parametrize("item", ["train.lr", "=3", ""])
def test_set_without_equals(item):
    msg = _error([item])
    assert "key=value" in msg


def test_set_into_a_non_section():
    msg = _error(["data.val=null", "data.val.path=x"])
    assert "data.val" in msg


@pytest.mark.parametrize("overrides, key", [
    (["train.max_minutes=abc"], "train.max_minutes"),
    (["data.val=3"], "data.val"),
    (["data.val.path=1"], "data.val.path"),
])
def test_wrong_type_for_optional_field_is_config_error(overrides, key):
    msg = _error(overrides)
    assert key in msg


def test_optional_field_accepts_value_and_null():
    assert load_config(None, ["train.max_minutes=5"]).train.max_minutes == 5.0
    assert load_config(None, ["train.max_minutes=null"]).train.max_minutes is None


# ---------------------------------------------------------------- factory

def _build(*overrides):
    return build_model(load_config(None, ["model.dim=16", "data.image_size=16", "data.max_question_length=8",
                                          "model.image_encoder={name: cnn, channels: [4, 8]}",
                                          "model.text_encoder={name: transformer, layers: 1, heads: 2}",
                                          *overrides]),
                       vocab_size=10, num_answers=3)


def _build_error(*overrides) -> str:
    with pytest.raises(ConfigError) as info:
        _build(*overrides)
    return str(info.value)


def test_factory_builds_the_named_components():
    model = _build("model.fusion={name: cross_attention, layers: 1, heads: 2, mlp_ratio: 2}",
                   "model.head={name: classifier, hidden: 8}")
    assert type(model.fusion) is FUSIONS["cross_attention"]
    assert len(model.fusion.blocks) == 1
    assert model.head.mlp[0].out_features == 8 and model.head.mlp[-1].out_features == 3
    assert model.text_encoder.embed.num_embeddings == 10
    assert model.text_encoder.pos.num_embeddings == 8  # max_length injected from data.max_question_length
    assert model.image_encoder.grid == 4  # image_size injected from data.image_size


def test_unknown_fusion_name_lists_known_names():
    msg = _build_error("model.fusion={name: nope}")
    assert "model.fusion.name" in msg and "nope" in msg
    for name in FUSIONS:
        assert name in msg


def test_missing_component_name():
    msg = _build_error("model.fusion={layers: 2}")
    assert "model.fusion.name" in msg


def test_a_value_the_constructor_refuses_names_the_key():
    assert _build_error("model.fusion={name: graph, heads: 3}") == (
        "config key 'model.fusion' (graph): dim 16 is not divisible by heads 3")
    assert "model.fusion.readout" in _build_error("model.fusion={name: graph, readout: max}")


def test_unknown_component_kwarg_named():
    msg = _build_error("model.fusion={name: cross_attention, layrs: 2}")
    assert "model.fusion.layrs" in msg and "layers" in msg


def test_missing_required_component_key_named():
    msg = _build_error("model.image_encoder={name: hf_vision}")
    assert "'model.image_encoder.path' is required" in msg


def test_wrong_component_kwarg_type_named():
    msg = _build_error("model.fusion={name: cross_attention, layers: two}")
    assert "model.fusion.layers" in msg
    msg = _build_error("model.image_encoder={name: cnn, channels: [4, x]}")
    assert "model.image_encoder.channels" in msg
    msg = _build_error("model.fusion={name: cross_attention, layers: true}")
    assert "model.fusion.layers" in msg


@pytest.mark.parametrize("override, key", [
    ("model.fusion={name: cross_attention, dim: 8}", "model.fusion.dim"),
    ("model.head={name: classifier, num_classes: 5}", "model.head.num_classes"),
    ("model.text_encoder={name: transformer, vocab_size: 5}", "model.text_encoder.vocab_size"),
    ("model.image_encoder={name: cnn, image_size: 32}", "model.image_encoder.image_size"),
])
def test_injected_arguments_are_rejected_as_unknown(override, key):
    msg = _build_error(override)
    assert key in msg and "unknown" in msg


def test_base_config_merges_sections_and_replaces_components(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text(
        "seed: 3\ntrain: {epochs: 7, lr: 0.002}\n"
        "model: {dim: 64, fusion: {name: cross_attention, layers: 3, heads: 2}}\n")
    child = tmp_path / "sub" / "child.yaml"
    child.write_text("base: ../base.yaml\ntrain: {epochs: 2}\nmodel: {fusion: {name: concat}}\n")
    config = load_config(child, ["train.lr=0.01"])
    assert (config.seed, config.train.epochs, config.train.lr, config.model.dim) == (3, 2, 0.01, 64)
    assert config.model.fusion == {"name": "concat"}  # not mixed with cross_attention's layers/heads


@pytest.mark.parametrize("text, message", [
    ("base: missing.yaml\n", "config file not found"),
    ("base: [a]\n", "'base' must be a path"),
    ("base: loop.yaml\n", "loops back"),
])
def test_bad_base_config_is_named(tmp_path, text, message):
    path = tmp_path / "loop.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


FUSION_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "fusions"


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_every_fusion_has_a_ready_benchmark_config(name):
    config = load_config(FUSION_CONFIGS / f"{name}.yaml")
    assert config.model.fusion["name"] == name
    assert config.data.root == "data/shapes" and config.out_dir == f"runs/fusions/{name}"
    model = build_model(config, vocab_size=50, num_answers=20)
    assert model.fusion.__class__ is FUSIONS[name]
