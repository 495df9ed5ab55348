"""Config -> model, through explicit tables of names (no registries, no import side effects)."""

from __future__ import annotations

import copy
import inspect
import typing
from pathlib import Path
from typing import Any

from torch import nn

from ..config import Config, check_type, unknown_key_message
from ..encoders.cnn import CNNImageEncoder
from ..encoders.hf_text import PretrainedTextEncoder
from ..encoders.pretrained import EfficientNetImageEncoder, HFVisionEncoder
from ..encoders.regions import RegionImageEncoder
from ..encoders.text import BiGRUTextEncoder, TransformerTextEncoder
from ..encoders.vit import ViTImageEncoder
from ..errors import ConfigError
from ..fusion.bilinear import LowRankBilinearFusion, OuterProductFusion
from ..fusion.concat import ConcatFusion
from ..fusion.cross_attention import CoAttentionFusion, CrossAttentionFusion
from ..fusion.gated import GatedModalityAttention
from ..fusion.graph import GraphFusion
from ..fusion.late import LateFusion
from ..fusion.mmbt import MMBTFusion
from ..fusion.pointwise import ProductFusion, SumFusion
from ..fusion.similarity import SimilarityAttentionFusion
from ..fusion.single_stream import SingleStreamFusion
from ..heads.caption_decoders import DECODERS
from ..heads.classifier import ClassifierHead
from ..heads.retrieval import DualEncoderHead, ITMHead
from .captioning import CaptioningModel, decoder_positions
from .dialogue import DIALOGUE_HEADS, DialogueModel, text_length
from .multiple_choice import MC_HEADS, MultipleChoiceModel
from .retrieval import RetrievalModel
from .vlm import VisionLanguageModel

IMAGE_ENCODERS: dict[str, type[nn.Module]] = {
    "cnn": CNNImageEncoder,
    "regions": RegionImageEncoder,
    "vit": ViTImageEncoder,
    "efficientnet": EfficientNetImageEncoder,
    "hf_vision": HFVisionEncoder,
}
TEXT_ENCODERS: dict[str, type[nn.Module]] = {"transformer": TransformerTextEncoder, "bigru": BiGRUTextEncoder,
                                             "pretrained": PretrainedTextEncoder}
FUSIONS: dict[str, type[nn.Module]] = {
    "concat": ConcatFusion,
    "similarity_attention": SimilarityAttentionFusion,
    "cross_attention": CrossAttentionFusion,
    "co_attention": CoAttentionFusion,
    "sum": SumFusion,
    "product": ProductFusion,
    "outer_product": OuterProductFusion,
    "bilinear": LowRankBilinearFusion,
    "late": LateFusion,
    "gated": GatedModalityAttention,
    "single_stream": SingleStreamFusion,
    "graph": GraphFusion,
    "mmbt": MMBTFusion,
}
HEADS: dict[str, type[nn.Module]] = {"classifier": ClassifierHead}
RETRIEVAL_HEADS: dict[str, type[nn.Module]] = {"dual_encoder": DualEncoderHead}
ITM_HEADS: dict[str, type[nn.Module]] = {"itm": ITMHead}


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
    missing = [p for p in settable if p not in kwargs and params[p].default is inspect.Parameter.empty]
    if missing:
        raise ConfigError(f"config key '{key}.{missing[0]}' is required for {key}.name {name!r}")
    try:
        return cls(**{k: v for k, v in injected.items() if k in params}, **kwargs)
    except ValueError as exc:  # a value the constructor refuses (heads not dividing dim, ...): name the key
        raise ConfigError(f"config key '{key}' ({name}): {exc}") from None


def build_encoders(config: Config, vocab_size: int) -> tuple[nn.Module, nn.Module]:
    """The image and text encoders of model.image_encoder / model.text_encoder, at width model.dim."""
    m = config.model
    return (build_component(IMAGE_ENCODERS, m.image_encoder, "model.image_encoder", dim=m.dim,
                            image_size=config.data.image_size),
            build_component(TEXT_ENCODERS, m.text_encoder, "model.text_encoder", dim=m.dim, vocab_size=vocab_size,
                            max_length=config.data.max_question_length))


def build_model(config: Config, vocab_size: int, num_answers: int) -> VisionLanguageModel:
    m = config.model
    if m.fusion is None:
        raise ConfigError("config key 'model.fusion' is required for task vqa (null is for task retrieval only)")
    return VisionLanguageModel(
        *build_encoders(config, vocab_size),
        build_component(FUSIONS, m.fusion, "model.fusion", dim=m.dim),
        build_component(HEADS, m.head, "model.head", dim=m.dim, num_classes=num_answers),
    )


def build_retrieval_model(config: Config, vocab_size: int) -> RetrievalModel:
    """Encoders + dual-encoder head (model.head) + optional fusion and ITM head (retrieval.itm_head)."""
    m = config.model
    if m.head.get("name") not in RETRIEVAL_HEADS:
        raise ConfigError(f"config key 'model.head.name' must be one of {', '.join(RETRIEVAL_HEADS)} for task "
                          f"retrieval, got {m.head.get('name')!r}")
    image_encoder, text_encoder = build_encoders(config, vocab_size)
    head = build_component(RETRIEVAL_HEADS, m.head, "model.head", dim=m.dim)
    fusion = itm_head = None
    if m.fusion is not None:
        fusion = build_component(FUSIONS, m.fusion, "model.fusion", dim=m.dim)
        itm_head = build_component(ITM_HEADS, config.retrieval.itm_head, "retrieval.itm_head", dim=m.dim)
    model = RetrievalModel(image_encoder, text_encoder, head, fusion, itm_head)
    model.flip_average = config.retrieval.flip_average
    model.reranker = config.retrieval.reranker
    return model


def build_captioning_model(config: Config, vocab_size: int) -> CaptioningModel:
    """model.image_encoder + model.decoder; the decoder works at the model width model.dim."""
    m = config.model
    if m.decoder is None:
        raise ConfigError("config key 'model.decoder' is required for task captioning, e.g. "
                          "{name: transformer, layers: 2, heads: 4} or {name: lstm}")
    image_encoder = build_component(IMAGE_ENCODERS, m.image_encoder, "model.image_encoder", dim=m.dim,
                                    image_size=config.data.image_size)
    decoder = build_component(DECODERS, m.decoder, "model.decoder", dim=m.dim, vocab_size=vocab_size,
                              max_length=decoder_positions(config))
    return CaptioningModel(image_encoder, decoder)


def build_dialogue_model(config: Config, vocab_size: int) -> DialogueModel:
    """Encoders + fusion + a discriminative head (model.head) or, dialogue.decoder generative, model.decoder."""
    m, generative = config.model, config.dialogue.decoder == "generative"
    if m.fusion is None:
        raise ConfigError("config key 'model.fusion' is required for task dialogue")
    image_encoder = build_component(IMAGE_ENCODERS, m.image_encoder, "model.image_encoder", dim=m.dim,
                                    image_size=config.data.image_size)
    text_encoder = build_component(TEXT_ENCODERS, m.text_encoder, "model.text_encoder", dim=m.dim,
                                   vocab_size=vocab_size, max_length=text_length(config))
    fusion = build_component(FUSIONS, m.fusion, "model.fusion", dim=m.dim)
    answer_encoder = None
    if generative:
        if m.decoder is None:
            raise ConfigError("config key 'model.decoder' is required for dialogue.decoder generative, e.g. "
                              "{name: transformer, layers: 2, heads: 4} or {name: lstm}")
        decoder = build_component(DECODERS, m.decoder, "model.decoder", dim=m.dim, vocab_size=vocab_size,
                                  max_length=config.dialogue.max_answer_length)
    else:
        decoder = build_component(DIALOGUE_HEADS, m.head, "model.head", dim=m.dim)
        answer_encoder = None if config.dialogue.share_text_encoder else copy.deepcopy(text_encoder)
    return DialogueModel(image_encoder, text_encoder, fusion, decoder, m.dim, answer_encoder, generative)


def build_mc_model(config: Config, vocab_size: int) -> MultipleChoiceModel:
    """Task vqa_mc: encoders + fusion + a match head (model.head: itm or classifier, two logits)."""
    m = config.model
    if m.fusion is None:
        raise ConfigError("config key 'model.fusion' is required for task vqa_mc: the candidates are scored "
                          "by fusing each with the image")
    if m.head.get("name") not in MC_HEADS:
        raise ConfigError(f"config key 'model.head.name' must be one of {', '.join(MC_HEADS)} for task vqa_mc, "
                          f"got {m.head.get('name')!r}")
    head = build_component(MC_HEADS, m.head, "model.head", dim=m.dim, num_classes=2)
    return MultipleChoiceModel(*build_encoders(config, vocab_size),
                               build_component(FUSIONS, m.fusion, "model.fusion", dim=m.dim), head)


def build_task_model(config: Config, vocab_size: int, num_answers: int | None = None) -> nn.Module:
    """The model of `config.task`: a VisionLanguageModel (vqa) or a RetrievalModel (retrieval)."""
    if config.task == "retrieval":
        return build_retrieval_model(config, vocab_size)
    if config.task == "dialogue":
        return build_dialogue_model(config, vocab_size)
    if config.task == "captioning":
        return build_captioning_model(config, vocab_size)
    if config.task == "vqa_mc":
        return build_mc_model(config, vocab_size)
    return build_model(config, vocab_size, num_answers)


def text_tokenizer_file(config: Config) -> Path | None:
    """The tokenizer file a pretrained text encoder brings (its own vocabulary), or None: the run
    then builds a word-level one from the training questions. The one place this is decided."""
    spec = config.model.text_encoder
    name = spec.get("name")
    find = getattr(TEXT_ENCODERS.get(name) if isinstance(name, str) else None, "tokenizer_file", None)
    return None if find is None else find(check_type(spec.get("path"), str | None, "model.text_encoder.path"))
