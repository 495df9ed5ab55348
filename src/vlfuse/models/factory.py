"""Config -> model, through explicit tables of names (no registries, no import side effects)."""

from __future__ import annotations

import inspect
import typing
from typing import Any

from torch import nn

from ..config import Config, check_type, unknown_key_message
from ..encoders.cnn import CNNImageEncoder
from ..encoders.regions import RegionImageEncoder
from ..encoders.text import BiGRUTextEncoder, TransformerTextEncoder
from ..errors import ConfigError
from ..fusion.concat import ConcatFusion
from ..fusion.cross_attention import CoAttentionFusion, CrossAttentionFusion
from ..fusion.similarity import SimilarityAttentionFusion
from ..heads.classifier import ClassifierHead
from .vlm import VisionLanguageModel

IMAGE_ENCODERS: dict[str, type[nn.Module]] = {"cnn": CNNImageEncoder, "regions": RegionImageEncoder}
TEXT_ENCODERS: dict[str, type[nn.Module]] = {"transformer": TransformerTextEncoder, "bigru": BiGRUTextEncoder}
FUSIONS: dict[str, type[nn.Module]] = {
    "concat": ConcatFusion,
    "similarity_attention": SimilarityAttentionFusion,
    "cross_attention": CrossAttentionFusion,
    "co_attention": CoAttentionFusion,
}
HEADS: dict[str, type[nn.Module]] = {"classifier": ClassifierHead}


def build_component(table: dict[str, type[nn.Module]], spec: dict, key: str, **injected: Any) -> nn.Module:
    """Instantiate `table[spec["name"]]` with spec's other keys, checked against its constructor.

    `injected` are values the run supplies (dim, vocabulary size...); a config may not set them.
    """
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in table:
        raise ConfigError(f"config key '{key}.name' must be one of {', '.join(table)}, got {name!r}")
    cls = table[name]
    params = inspect.signature(cls.__init__).parameters
    hints = typing.get_type_hints(cls.__init__)
    settable = [p for p in params if p != "self" and p not in injected]
    kwargs = {}
    for arg, value in spec.items():
        if arg not in settable:
            raise ConfigError(unknown_key_message(f"{key}.{arg}", arg, settable))
        kwargs[arg] = check_type(value, hints.get(arg, Any), f"{key}.{arg}")
    return cls(**{k: v for k, v in injected.items() if k in params}, **kwargs)


def build_model(config: Config, vocab_size: int, num_answers: int) -> VisionLanguageModel:
    m = config.model
    return VisionLanguageModel(
        build_component(IMAGE_ENCODERS, m.image_encoder, "model.image_encoder", dim=m.dim,
                        image_size=config.data.image_size),
        build_component(TEXT_ENCODERS, m.text_encoder, "model.text_encoder", dim=m.dim, vocab_size=vocab_size,
                        max_length=config.data.max_question_length),
        build_component(FUSIONS, m.fusion, "model.fusion", dim=m.dim),
        build_component(HEADS, m.head, "model.head", dim=m.dim, num_classes=num_answers),
    )
