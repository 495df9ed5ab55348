"""Every fusion in the factory table honours the FusionOutput contract (see DESIGN.md).

Parametrised over `FUSIONS`, so a newly registered fusion is tested automatically.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from vlfuse.config import load_config
from vlfuse.models.factory import FUSIONS, build_model
from vlfuse.types import Features, FusionOutput, masked_mean

ATOL = 1e-5
DIM = 16
NAMES = sorted(FUSIONS)
# Small values for whichever of these a fusion's constructor takes.
SMALL = {"hidden": 32, "heads": 2, "layers": 2, "mlp_ratio": 2.0}
# Fusions with no attention at all: need_weights has nothing to return.
ATTENTION_FREE = {"concat", "sum", "product", "outer_product", "bilinear"}


@pytest.fixture(autouse=True)
def _pretrained_path(tiny_bert_dir, monkeypatch):
    """Fusions that run a pretrained transformer (they take a `path`: MMBT) get a tiny random BERT
    whose width is DIM, so the random text features stand for its input embeddings."""
    monkeypatch.setitem(SMALL, "path", str(tiny_bert_dir))


def _small_kwargs(cls) -> dict:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in SMALL.items() if k in params}


def make_fusion(name: str, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return FUSIONS[name](dim=DIM, **{**_small_kwargs(FUSIONS[name]), **kw})


def _features(tokens: torch.Tensor, mask: torch.Tensor) -> Features:
    # pooled is derived from the tokens, as the encoders do, so gradients to tokens flow through it too
    return Features(tokens, mask, masked_mean(tokens, mask))


def make_inputs(b: int = 3, nv: int = 4, nt: int = 5, seed: int = 0, requires_grad: bool = False):
    """Image (nv tokens, last image has a padded token) and text (nt tokens, ragged) features.

    nv != nt so that the key axis of an attention map tells which stream it attends to.
    """
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(b, nv, DIM, generator=g).requires_grad_(requires_grad)
    t = torch.randn(b, nt, DIM, generator=g).requires_grad_(requires_grad)
    v_mask = torch.ones(b, nv, dtype=torch.bool)
    v_mask[-1, -1] = False
    t_len = torch.tensor([nt, 2, 3][:b] + [nt] * max(0, b - 3))
    t_mask = torch.arange(nt)[None, :] < t_len[:, None]
    return _features(v, v_mask), _features(t, t_mask)


def pad(f: Features, extra: int, seed: int) -> Features:
    """Append `extra` masked tokens holding large random values; pooled stays as it was."""
    g = torch.Generator().manual_seed(seed)
    b, _, d = f.tokens.shape
    junk = torch.randn(b, extra, d, generator=g) * 10
    return Features(torch.cat([f.tokens, junk], 1),
                    torch.cat([f.mask, torch.zeros(b, extra, dtype=torch.bool)], 1), f.pooled)


@pytest.mark.parametrize("name", NAMES)
def test_output_contract(name):
    fusion = make_fusion(name).eval()
    image, text = make_inputs()
    out = fusion(image, text)
    assert isinstance(out, FusionOutput)
    assert out.pooled.shape == (3, DIM)
    assert torch.isfinite(out.pooled).all()
    if out.tokens is not None:
        assert out.tokens.dim() == 3 and out.tokens.shape[0] == 3 and out.tokens.shape[-1] == DIM
    assert isinstance(out.attentions, dict)
    # rows are not mixed up: different inputs give different outputs
    assert not torch.allclose(out.pooled[0], out.pooled[1])


@pytest.mark.parametrize("name", NAMES)
def test_text_padding_does_not_change_result(name):
    fusion = make_fusion(name, dropout=0.2).eval() if "dropout" in inspect.signature(
        FUSIONS[name].__init__).parameters else make_fusion(name).eval()
    image, text = make_inputs()
    ref = fusion(image, text).pooled
    padded = fusion(image, pad(text, 3, seed=1)).pooled
    torch.testing.assert_close(padded, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_image_padding_does_not_change_result(name):
    fusion = make_fusion(name).eval()
    image, text = make_inputs()
    ref = fusion(image, text).pooled
    padded = fusion(pad(image, 2, seed=2), text).pooled
    torch.testing.assert_close(padded, ref, atol=ATOL, rtol=0)
    # the already-masked image token of the last row can hold anything too
    tokens = image.tokens.detach().clone()
    tokens[-1, -1] = 100.0
    changed = fusion(Features(tokens, image.mask, image.pooled), text).pooled
    torch.testing.assert_close(changed, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_image_and_text_tokens(name):
    fusion = make_fusion(name)
    image, text = make_inputs(requires_grad=True)
    out = fusion(image, text)
    out.pooled.pow(2).sum().backward()
    for stream, f in (("image", image), ("text", text)):
        grad = f.tokens.grad
        assert grad is not None, f"no gradient reaches the {stream} tokens"
        real = grad[f.mask]
        assert real.abs().sum(-1).gt(0).all(), f"some real {stream} token gets no gradient"
        assert torch.all(grad[~f.mask] == 0), f"padded {stream} tokens must get no gradient"
    for pname, p in fusion.named_parameters():
        assert p.grad is not None, f"{name}: parameter {pname} got no gradient (dead parameter)"


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_given_seed(name):
    image, text = make_inputs()
    a = make_fusion(name, seed=7).eval()(image, text).pooled
    b = make_fusion(name, seed=7).eval()(image, text).pooled
    c = make_fusion(name, seed=8).eval()(image, text).pooled
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def _axis_mask(n: int, image: Features, text: Features) -> torch.Tensor:
    """The mask [B, n] of an attention axis of length n: one stream, or a joint sequence in the
    order [text, image] (graph nodes) or [CLS, text, image] (single stream)."""
    nt, nv = text.mask.shape[1], image.mask.shape[1]
    layouts = {nv: image.mask, nt: text.mask, nt + nv: torch.cat([text.mask, image.mask], 1),
               1 + nt + nv: torch.cat([torch.ones_like(text.mask[:, :1]), text.mask, image.mask], 1),
               2 + nv + nt: torch.cat([torch.ones_like(text.mask[:, :1]), image.mask,  # MMBT: [CLS] image [SEP] text
                                       torch.ones_like(text.mask[:, :1]), text.mask], 1)}
    assert n in layouts, f"an attention axis of length {n} matches no stream nor joint sequence"
    return layouts[n]


def _key_mask_for(w: torch.Tensor, image: Features, text: Features) -> torch.Tensor:
    mask = _axis_mask(w.shape[-1], image, text)
    return mask.view(mask.shape[0], *([1] * (w.dim() - 2)), w.shape[-1]).expand_as(w)


@pytest.mark.parametrize("name", NAMES)
def test_attentions_only_when_asked(name):
    fusion = make_fusion(name).eval()
    image, text = make_inputs()
    plain = fusion(image, text)
    assert plain.attentions == {}
    assert fusion(image, text, need_weights=False).attentions == {}
    weighted = fusion(image, text, need_weights=True)
    torch.testing.assert_close(weighted.pooled, plain.pooled, atol=ATOL, rtol=0)
    if name in ATTENTION_FREE:
        return  # no attention, nothing to return
    assert weighted.attentions, f"{name} returned no attention weights with need_weights=True"
    for key, w in weighted.attentions.items():
        assert isinstance(w, torch.Tensor), key
        assert w.shape[0] == 3, key
        if key == "modality_weights":  # [B, 2]: one weight per modality (image, text); no axis is padded
            assert w.shape == (3, 2) and torch.all(w >= 0), key
            torch.testing.assert_close(w.sum(-1), torch.ones(3), atol=ATOL, rtol=0)
            continue
        kmask = _key_mask_for(w, image, text)
        assert torch.all(w[~kmask] == 0), f"{key}: padded keys got weight"
        assert torch.all(w >= 0), key
        if key.endswith("adjacency"):  # a graph's edges (0/1), not a distribution
            assert set(w.unique().tolist()) <= {0.0, 1.0}, key
            continue
        # each real query's row is a distribution (a padded graph node reads nothing: its row is 0)
        qmask = _axis_mask(w.shape[-2], image, text)
        real = qmask.view(qmask.shape[0], *([1] * (w.dim() - 3)), w.shape[-2]).expand(w.shape[:-1])
        torch.testing.assert_close(w.sum(-1)[real], torch.ones(int(real.sum())), atol=ATOL, rtol=0,
                                   msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("name", [n for n in NAMES if getattr(FUSIONS[n], "accepts_image_index", False)])
@pytest.mark.parametrize("need_weights", [False, True])
def test_image_index_equals_expanded_features(name, need_weights):
    fusion = make_fusion(name).eval()
    images, _ = make_inputs(b=2, seed=3)
    _, text = make_inputs(b=5, seed=4)
    index = torch.tensor([0, 0, 1, 1, 1])
    fast = fusion(images, text, need_weights=need_weights, image_index=index)
    ref = fusion(images.index_select(index), text, need_weights=need_weights)
    assert fast.pooled.shape == (5, DIM)
    torch.testing.assert_close(fast.pooled, ref.pooled, atol=ATOL, rtol=0)
    if ref.tokens is not None:
        torch.testing.assert_close(fast.tokens, ref.tokens, atol=ATOL, rtol=0)
    assert fast.attentions.keys() == ref.attentions.keys()
    for key in ref.attentions:
        torch.testing.assert_close(fast.attentions[key], ref.attentions[key], atol=ATOL, rtol=0)


# ---------------------------------------------------------------- the whole model

def _model_config(name: str):
    fusion = ", ".join(f"{k}: {v}" for k, v in _small_kwargs(FUSIONS[name]).items())
    text = "{name: transformer, layers: 1, heads: 2}"
    if FUSIONS[name].reads_text_embeddings:  # MMBT: the text stops at its embeddings
        text = f"{{name: pretrained, path: {SMALL['path']}, embeddings_only: true}}"
    return load_config(None, [
        "model.dim=16",
        "data.image_size=16",
        "data.max_question_length=8",
        "model.image_encoder={name: cnn, channels: [4, 8], layers: 1, heads: 2}",
        f"model.text_encoder={text}",
        f"model.fusion={{name: {name}{', ' + fusion if fusion else ''}}}",
        "model.head={name: classifier, hidden: 16}",
    ])


def _model_batch():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=g)
    ids = torch.randint(1, 20, (5, 6), generator=g)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4, [1] * 6]).bool()
    index = torch.tensor([0, 1, 1, 0, 1])
    return images, ids, mask, index


@pytest.mark.parametrize("name", NAMES)
def test_model_image_index_equals_repeated_images(name):
    torch.manual_seed(0)
    model = build_model(_model_config(name), vocab_size=20, num_answers=7).eval()
    assert isinstance(model.fusion, FUSIONS[name])
    images, ids, mask, index = _model_batch()
    logits, fused = model(images, ids, mask, image_index=index)
    assert logits.shape == (5, 7)
    assert fused.pooled.shape == (5, 16)
    ref_logits, _ = model(images[index], ids, mask)
    torch.testing.assert_close(logits, ref_logits, atol=ATOL, rtol=0)
    # uint8 images are scaled to [0, 1]: the same as passing the float images
    float_logits, _ = model(images.float() / 255, ids, mask, image_index=index)
    torch.testing.assert_close(float_logits, logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_model_backward_reaches_every_component(name):
    torch.manual_seed(0)
    model = build_model(_model_config(name), vocab_size=20, num_answers=7).train()
    images, ids, mask, index = _model_batch()
    logits, _ = model(images, ids, mask, image_index=index)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3, 4]))
    loss.backward()
    for part in ("image_encoder", "text_encoder", "fusion", "head"):
        module = getattr(model, part)
        grads = [p.grad for p in module.parameters()]
        assert grads and all(g is not None for g in grads), f"{name}: some {part} parameter got no gradient"
        assert sum(g.abs().sum() for g in grads) > 0, f"{name}: {part} gradients are all zero"
