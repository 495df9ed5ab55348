"""Validated run configuration: YAML in, typed dataclasses out, a clear error naming any bad key.

Model components stay plain dicts (`{"name": ..., **kwargs}`) here; the factory checks them against
the constructor of the class their name selects, so the schema never goes stale.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError


@dataclass
class SplitConfig:
    """Where one split lives. VQA v2: questions + annotations + images; JSONL/CSV: path (+ images);
    COCO captions: annotations (captions_*.json) + images."""

    questions: str | None = None
    annotations: str | None = None
    images: str | None = None
    path: str | None = None


@dataclass
class DataConfig:
    # Question formats serve task vqa; caption formats (coco_captions) serve task retrieval.
    format: Literal["vqa_v2", "jsonl", "gqa", "vgqa", "nlvr", "nlvr2", "snli_ve", "coco_captions"] = "vqa_v2"
    root: str = "."  # relative split paths are resolved against this folder
    train: SplitConfig = field(default_factory=SplitConfig)
    val: SplitConfig | None = None
    test: SplitConfig | None = None
    image_size: int = 64
    max_question_length: int = 32  # tokens of a question (task retrieval: of a caption)
    max_answers: int = 3000  # the most frequent training answers become the classes
    on_bad_sample: Literal["error", "skip"] = "skip"


@dataclass
class ModelConfig:
    dim: int = 128
    image_encoder: dict = field(default_factory=lambda: {"name": "cnn"})
    text_encoder: dict = field(default_factory=lambda: {"name": "transformer"})
    # Task retrieval: null trains a dual encoder alone (no matching head, no re-ranking).
    fusion: dict | None = field(default_factory=lambda: {"name": "cross_attention"})
    # Task vqa: classifier. Task retrieval: dual_encoder (embedding projections + temperature).
    head: dict = field(default_factory=lambda: {"name": "classifier"})


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_images: int = 32  # every question of each image rides along, so questions per step ~ 20x this
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    grad_clip: float = 1.0
    max_minutes: float | None = None  # stop (and export) after this much training time
    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_workers: int = 0
    log_every_n_steps: int = 20
    checkpoint_every_n_steps: int = 200
    progress_bar: bool = True


@dataclass
class RetrievalConfig:
    """Settings of task retrieval (read by no other task).

    Loss = InfoNCE + hinge_weight * VSE++ hinge + itm_weight * image-text matching on hard negatives
    (the matching part only when model.fusion is set). Evaluation ranks by embedding similarity,
    then re-ranks each query's top rerank_k with the matching head: score = ITC + ITM (LAVIS).
    """

    itm_head: dict = field(default_factory=lambda: {"name": "itm"})  # fused pooled -> match / no match
    itm_weight: float = 1.0
    hinge_weight: float = 0.0  # 0: InfoNCE alone
    hinge_margin: float = 0.2
    hinge_max_violation: bool = True  # VSE++: only the hardest negative counts
    negatives_temperature: float = 1.0  # ITM negatives drawn by softmax(ITC logits / this); 0: hardest
    rerank_k: int = 16  # 0: report the first stage only
    eval_batch: int = 64


@dataclass
class Config:
    seed: int = 0
    task: Literal["vqa", "retrieval"] = "vqa"
    out_dir: str = "runs/vqa"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read YAML (or start from defaults), apply `key.sub=value` overrides, validate."""
    raw = read_config_file(path) if path is not None else {}
    for item in overrides:
        apply_override(raw, item)
    return from_dict(Config, raw)


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The YAML mapping in `path`, on top of the file its `base:` key names (relative to `path`).

    Sections merge key by key; a component spec (a mapping with a `name`) replaces the base's
    whole, since another component's settings would not fit it.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to this file")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: config key 'base' must be a path, got {base!r}")
    return _merge(read_config_file(path.parent / base, _seen + (path.resolve(),)), raw)


def _merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and "name" not in value:
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@functools.cache
def _yaml_loader() -> type:
    import yaml  # imported on first use: importing vlfuse stays light

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))
    return Loader


def load_yaml(text: str) -> Any:
    """yaml.safe_load, except that `3e-4` is a float (YAML 1.2) rather than YAML 1.1's string."""
    import yaml

    return yaml.load(text, Loader=_yaml_loader())


def apply_override(raw: dict, item: str) -> None:
    """`train.lr=3e-4` sets raw["train"]["lr"]; the value is parsed as YAML (numbers, lists, null)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    *parents, leaf = key.strip().split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
    node[leaf] = load_yaml(value)


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def from_dict(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, naming the first wrong key or value."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(unknown_key_message(f"{prefix}{key}", key, names))
        kwargs[key] = check_type(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)


def unknown_key_message(full_key: str, key: str, known: list[str]) -> str:
    # 'lr_rate' is too far from 'lr' for difflib, so also try the key's first word
    close = difflib.get_close_matches(str(key), known, n=1) or [k for k in known if k == str(key).split("_")[0]]
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
    return f"unknown config key '{full_key}'{hint}"


def check_type(value: Any, hint: Any, key: str) -> Any:
    """Return `value` converted to `hint` where that is lossless (int -> float), else raise ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return check_type(value, option, key)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0] from None
        raise ConfigError(f"config key '{key}' has an invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, f"{key}.")
    expected = origin or hint
    if expected is typing.Any or hint is inspect_empty:
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected in (list, tuple) and isinstance(value, (list, tuple)):
        item = args[0] if args else typing.Any
        return [check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if expected is int and isinstance(value, bool) or not isinstance(value, expected):
        raise ConfigError(f"config key '{key}' must be {_type_name(expected)}, got {type(value).__name__} {value!r}")
    return value


class inspect_empty:  # stands for "no annotation" when checking constructor parameters
    pass


def _type_name(t: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping",
            list: "a list"}.get(t, getattr(t, "__name__", str(t)))
