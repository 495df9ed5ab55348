"""Encoders speak the Features contract; text encoders are invariant to padding."""

from __future__ import annotations

import pytest
import torch

from vlfuse.encoders.cnn import CNNImageEncoder
from vlfuse.encoders.text import BiGRUTextEncoder, TransformerTextEncoder
from vlfuse.types import Features, grid_boxes

ATOL = 1e-5
VOCAB = 30


# ---------------------------------------------------------------- image encoder

@pytest.mark.parametrize("coord", [True, False])
@pytest.mark.parametrize("layers", [0, 1])
def test_cnn_encoder_features_contract(coord, layers):
    torch.manual_seed(0)
    enc = CNNImageEncoder(dim=16, channels=[4, 8], image_size=16, coord=coord, layers=layers, heads=2)
    images = torch.rand(2, 3, 16, 16)
    out = enc(images)
    assert isinstance(out, Features)
    g = 16 // 4
    assert out.tokens.shape == (2, g * g, 16)
    assert out.mask.shape == (2, g * g) and out.mask.dtype == torch.bool and bool(out.mask.all())
    assert out.pooled.shape == (2, 16)
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()
    assert len(enc.blocks) == layers
    # different images give different tokens
    assert not torch.allclose(out.tokens[0], out.tokens[1])
    out.pooled.sum().backward()
    assert enc.cnn[0][0].weight.grad is not None and enc.cnn[0][0].weight.grad.abs().sum() > 0


def test_cnn_encoder_coord_adds_two_input_channels():
    with_coord = CNNImageEncoder(dim=16, channels=[4], image_size=8, coord=True)
    without = CNNImageEncoder(dim=16, channels=[4], image_size=8, coord=False)
    assert with_coord.cnn[0][0].in_channels == 5
    assert without.cnn[0][0].in_channels == 3


def test_cnn_encoder_eval_is_per_image():
    """In eval mode an image's features do not depend on the other images in the batch."""
    torch.manual_seed(1)
    enc = CNNImageEncoder(dim=16, channels=[4, 8], image_size=16, layers=1, heads=2).eval()
    images = torch.rand(3, 3, 16, 16)
    together = enc(images)
    alone = enc(images[1:2])
    torch.testing.assert_close(together.tokens[1:2], alone.tokens, atol=ATOL, rtol=0)


@pytest.mark.parametrize("size", [8, 32, 24])
def test_cnn_encoder_wrong_image_size_is_a_clear_value_error(size):
    enc = CNNImageEncoder(dim=16, channels=[4, 8], image_size=16)
    with pytest.raises(ValueError, match=r"16 px"):
        enc(torch.rand(1, 3, size, size))


def test_cnn_encoder_too_small_image_size_rejected():
    with pytest.raises(ValueError, match="too small"):
        CNNImageEncoder(dim=16, channels=[4, 8, 8], image_size=4)


# ---------------------------------------------------------------- text encoders

def _transformer(**kw):
    return TransformerTextEncoder(VOCAB, dim=16, layers=2, heads=2, max_length=12, **kw)


def _bigru(**kw):
    return BiGRUTextEncoder(VOCAB, dim=16, layers=2, **kw)


TEXT_ENCODERS = {"transformer": _transformer, "bigru": _bigru}


def _batch(length: int, seed: int = 0):
    """Two sentences (lengths 4 and 2), right-padded to `length` with random (masked) ids."""
    g = torch.Generator().manual_seed(seed)
    real = [torch.tensor([5, 7, 9, 11]), torch.tensor([3, 4])]
    ids = torch.randint(1, VOCAB, (2, length), generator=g)
    mask = torch.zeros(2, length, dtype=torch.bool)
    for i, r in enumerate(real):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = True
    return ids, mask


@pytest.mark.parametrize("name", TEXT_ENCODERS)
def test_text_encoder_features_contract(name):
    torch.manual_seed(0)
    enc = TEXT_ENCODERS[name]()
    ids, mask = _batch(6)
    out = enc(ids, mask.long())  # an integer mask works as well as a bool one
    assert isinstance(out, Features)
    assert out.tokens.shape == (2, 6, 16)
    assert out.pooled.shape == (2, 16)
    assert out.mask.dtype == torch.bool
    assert torch.equal(out.mask, mask)
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()


@pytest.mark.parametrize("name", TEXT_ENCODERS)
def test_text_encoder_padding_invariance(name):
    torch.manual_seed(0)
    enc = TEXT_ENCODERS[name](dropout=0.3).eval()
    short_ids, short_mask = _batch(5, seed=1)
    long_ids, long_mask = _batch(9, seed=2)
    short, long = enc(short_ids, short_mask), enc(long_ids, long_mask)
    for i in range(2):
        n = int(short_mask[i].sum())
        torch.testing.assert_close(short.tokens[i, :n], long.tokens[i, :n], atol=ATOL, rtol=0)
    torch.testing.assert_close(short.pooled, long.pooled, atol=ATOL, rtol=0)
    # Sanity: a different real token does change the result.
    other_ids = long_ids.clone()
    other_ids[1, 0] = 20
    other = enc(other_ids, long_mask)
    assert not torch.allclose(other.pooled[1], long.pooled[1], atol=1e-4)
    torch.testing.assert_close(other.pooled[0], long.pooled[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", TEXT_ENCODERS)
def test_text_encoder_gradients_reach_embeddings(name):
    torch.manual_seed(0)
    enc = TEXT_ENCODERS[name]()
    ids, mask = _batch(6)
    out = enc(ids, mask)
    # random weights: plain sums of LayerNorm outputs are constant, so their gradients are mere rounding
    g = torch.Generator().manual_seed(1)
    loss = (out.pooled * torch.randn(out.pooled.shape, generator=g)).sum()
    (loss + (out.tokens[mask] * torch.randn(out.tokens[mask].shape, generator=g)).sum()).backward()
    grad = enc.embed.weight.grad
    assert grad is not None
    used = ids[mask].unique()
    assert torch.all(grad[used].abs().sum(-1) > 0), "every real token's embedding gets a gradient"
    unused = torch.tensor(sorted(set(range(VOCAB)) - set(ids.flatten().tolist())))
    assert torch.all(grad[unused] == 0)
    for pname, p in enc.named_parameters():
        assert p.grad is not None, f"{name}: parameter {pname} got no gradient"


def test_bigru_pooled_uses_both_directions():
    """The pooled vector must depend on the first token (backward direction) and on the last real one."""
    torch.manual_seed(0)
    enc = _bigru().eval()
    ids, mask = _batch(6)
    base = enc(ids, mask).pooled
    for pos in (0, 3):
        changed = ids.clone()
        changed[0, pos] = 21
        assert not torch.allclose(enc(changed, mask).pooled[0], base[0], atol=1e-4)


@pytest.mark.parametrize("layers", [1, 2])
def test_bigru_pooled_is_top_layer_final_states(layers):
    """pooled = proj([forward state at the last real token ; backward state at the first token]) of the top layer."""
    torch.manual_seed(0)
    enc = BiGRUTextEncoder(VOCAB, dim=16, layers=layers).eval()
    ids, mask = _batch(6)
    pooled = enc(ids, mask).pooled
    for i in range(2):
        n = int(mask[i].sum())
        out, _ = enc.gru(enc.embed(ids[i:i + 1, :n]))  # unpadded: no packing needed
        final = torch.cat([out[0, n - 1, :16], out[0, 0, 16:]], -1)
        torch.testing.assert_close(pooled[i], enc.pooled_proj(final), atol=ATOL, rtol=0)


def test_image_encoders_report_where_their_tokens_lie():
    boxes = grid_boxes(2, 2, batch=3)
    assert boxes.shape == (3, 4, 4)
    assert boxes[0].tolist() == [[0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5], [0, 0.5, 0.5, 1], [0.5, 0.5, 1, 1]]
    out = CNNImageEncoder(dim=8, channels=[4, 4], image_size=16)(torch.rand(2, 3, 16, 16))
    assert out.boxes.shape == (2, 16, 4) and torch.all(out.boxes[..., 2:] > out.boxes[..., :2])
    assert out.index_select(torch.tensor([1, 1, 0])).boxes.shape == (3, 16, 4)


def test_cnn_stages_are_residual_blocks():
    from vlfuse.encoders.cnn import ResidualBlock

    enc = CNNImageEncoder(dim=8, channels=[4, 4], image_size=16, residual_blocks=2)
    assert sum(isinstance(m, ResidualBlock) for m in enc.cnn) == 4
    block = ResidualBlock(4)
    for p in block.body.parameters():
        torch.nn.init.zeros_(p)  # a zero residual branch leaves relu(x)
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(block(x), torch.relu(x))
