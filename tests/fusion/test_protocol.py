"""Every fusion in the factory's table describes itself (vlfuse.types.Fusion), and truly: its
token_layout is the layout of the tokens it returns, its flags match what forward accepts."""

from __future__ import annotations

import inspect
import typing

import pytest
import torch

from vlfuse.models.factory import FUSIONS
from vlfuse.types import FUSION_DEFAULTS, Features, Fusion, FusionOutput, masked_mean, token_spans

DIM, NT, NV = 8, 3, 4
ATTRIBUTES = {name: hint for name, hint in typing.get_type_hints(Fusion).items()}


def _features(n: int, dim: int) -> Features:
    tokens = torch.randn(2, n, dim)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, -1] = False
    return Features(tokens, mask, masked_mean(tokens, mask))


def _build(name: str, tiny_bert_dir) -> tuple[torch.nn.Module, int]:
    """The fusion at width DIM, and the width of the text it reads (mmbt: the tiny BERT's embeddings)."""
    if name == "mmbt":
        return FUSIONS[name](dim=DIM, path=str(tiny_bert_dir)), 16
    return FUSIONS[name](dim=DIM), DIM


def test_the_protocol_names_the_attributes_every_reader_uses():
    assert set(ATTRIBUTES) == set(FUSION_DEFAULTS) == {"token_layout", "accepts_image_index",
                                                       "reads_text_embeddings", "accepts_graph"}


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_every_fusion_in_the_table_sets_each_attribute_on_its_class(name):
    cls = FUSIONS[name]
    for attribute in ATTRIBUTES:
        assert attribute in vars(cls), f"{cls.__name__} does not say its {attribute}"
    for flag in ("accepts_image_index", "reads_text_embeddings", "accepts_graph"):
        assert isinstance(getattr(cls, flag), bool)
    layout = cls.token_layout
    assert layout is None or (isinstance(layout, tuple) and set(layout) <= {"cls", "sep", "text", "image"}
                              and len(set(layout)) == len(layout))
    parameters = inspect.signature(cls.forward).parameters
    assert cls.accepts_image_index == ("image_index" in parameters)
    assert cls.accepts_graph == ("graph" in parameters)


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_every_fusion_satisfies_the_protocol_and_returns_the_layout_it_declares(name, tiny_bert_dir):
    torch.manual_seed(0)
    fusion, text_dim = _build(name, tiny_bert_dir)
    assert isinstance(fusion, Fusion)
    out = fusion.eval()(_features(NV, DIM), _features(NT, text_dim))
    assert isinstance(out, FusionOutput) and out.pooled.shape == (2, DIM)
    if fusion.token_layout is None:
        assert out.tokens is None
    else:
        spans = token_spans(fusion.token_layout, NT, NV)
        assert out.tokens.shape[:2] == (2, max(s.stop for s in spans.values()))


def test_token_spans_place_each_part_in_order():
    assert token_spans(("cls", "image", "sep", "text"), nt=3, nv=4) == {
        "cls": slice(0, 1), "image": slice(1, 5), "sep": slice(5, 6), "text": slice(6, 9)}
    assert token_spans(("text", "image"), nt=2, nv=5) == {"text": slice(0, 2), "image": slice(2, 7)}
