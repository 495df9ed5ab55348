"""Attention primitives and transformer blocks: fast path == explicit path, masks, kv_index, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from vlfuse.layers.attention import AdditiveAttention, MultiHeadAttention, scaled_dot_product_attention
from vlfuse.layers.transformer import CrossAttentionBlock, TransformerBlock

ATOL = 1e-5


def _key_mask(b: int, nk: int, seed: int = 0) -> torch.Tensor:
    """Right-padded key mask with at least one real key per row and at least one padded key somewhere."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, nk, (b,), generator=g)
    lengths[0] = nk  # one full row too
    return torch.arange(nk)[None, :] < lengths[:, None]


def _qkv(shape_prefix: tuple[int, ...], nq: int, nk: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape_prefix, nq, d, generator=g)
    k = torch.randn(*shape_prefix, nk, d, generator=g)
    v = torch.randn(*shape_prefix, nk, d, generator=g)
    return q, k, v


@pytest.mark.parametrize("prefix", [(3,), (3, 2)], ids=["3d", "4d"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_sdpa_fast_path_matches_explicit_path(prefix, masked):
    q, k, v = _qkv(prefix, nq=4, nk=6, d=8)
    mask = _key_mask(prefix[0], 6) if masked else None
    fast, no_weights = scaled_dot_product_attention(q, k, v, mask, need_weights=False)
    slow, weights = scaled_dot_product_attention(q, k, v, mask, need_weights=True)
    assert no_weights is None
    assert fast.shape == slow.shape == q.shape
    assert weights.shape == (*prefix, 4, 6)
    torch.testing.assert_close(fast, slow, atol=ATOL, rtol=0)


@pytest.mark.parametrize("prefix", [(3,), (3, 2)], ids=["3d", "4d"])
def test_sdpa_weights_zero_on_masked_keys_and_rows_sum_to_one(prefix):
    q, k, v = _qkv(prefix, nq=5, nk=7, d=8, seed=1)
    mask = _key_mask(prefix[0], 7, seed=1)
    assert not mask.all()
    _, weights = scaled_dot_product_attention(q, k, v, mask, need_weights=True)
    bmask = mask.view(prefix[0], *([1] * (len(prefix) - 1)), 1, 7).expand_as(weights)
    assert torch.all(weights[~bmask] == 0), "padded keys must get exactly zero weight"
    assert torch.all(weights[bmask] > 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=ATOL, rtol=0)


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("prefix", [(3,), (3, 2)], ids=["3d", "4d"])
def test_sdpa_padded_key_values_do_not_matter(prefix, need_weights):
    q, k, v = _qkv(prefix, nq=4, nk=6, d=8, seed=2)
    mask = _key_mask(prefix[0], 6, seed=2)
    out, _ = scaled_dot_product_attention(q, k, v, mask, need_weights=need_weights)
    bmask = mask.view(prefix[0], *([1] * (len(prefix) - 1)), 6, 1).expand_as(k)
    k2 = torch.where(bmask, k, torch.randn_like(k) * 100)
    v2 = torch.where(bmask, v, torch.randn_like(v) * 100)
    out2, _ = scaled_dot_product_attention(q, k2, v2, mask, need_weights=need_weights)
    torch.testing.assert_close(out, out2, atol=ATOL, rtol=0)
    # ...while a real key does matter (the comparison above is not vacuous).
    v3 = v.clone()
    v3[0, ..., 0, :] += 1.0
    out3, _ = scaled_dot_product_attention(q, k, v3, mask, need_weights=need_weights)
    assert not torch.allclose(out, out3, atol=1e-3)


def test_sdpa_matches_reference_softmax():
    q, k, v = _qkv((2,), nq=3, nk=4, d=8, seed=3)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    out, weights = scaled_dot_product_attention(q, k, v, mask, need_weights=True)
    for b in range(2):
        n = int(mask[b].sum())
        ref_w = (q[b] @ k[b, :n].T / 8 ** 0.5).softmax(-1)
        torch.testing.assert_close(weights[b, :, :n], ref_w, atol=ATOL, rtol=0)
        torch.testing.assert_close(out[b], ref_w @ v[b, :n], atol=ATOL, rtol=0)


def test_mha_shapes_and_paths_agree():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, heads=4).eval()
    query, key = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    mask = _key_mask(3, 7)
    out, weights = mha(query, key, key, mask, need_weights=True)
    assert out.shape == (3, 5, 16)
    assert weights.shape == (3, 4, 5, 7)
    fast, none = mha(query, key, key, mask, need_weights=False)
    assert none is None
    torch.testing.assert_close(out, fast, atol=ATOL, rtol=0)
    bmask = mask[:, None, None, :].expand_as(weights)
    assert torch.all(weights[~bmask] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 5), atol=ATOL, rtol=0)


def test_mha_rejects_dim_not_divisible_by_heads():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, heads=4)


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_mha_kv_index_equals_explicit_expansion(need_weights, masked):
    torch.manual_seed(1)
    mha = MultiHeadAttention(16, heads=2).eval()
    key = torch.randn(2, 6, 16)   # two "images"
    value = torch.randn(2, 6, 16)
    mask = torch.tensor([[True] * 6, [True, True, True, False, False, False]]) if masked else None
    index = torch.tensor([0, 1, 1, 0, 1])
    query = torch.randn(5, 4, 16)  # five "questions"
    out, w = mha(query, key, value, mask, need_weights=need_weights, kv_index=index)
    ref, ref_w = mha(query, key[index], value[index], None if mask is None else mask[index],
                     need_weights=need_weights)
    assert out.shape == (5, 4, 16)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    if need_weights:
        assert w.shape == (5, 2, 4, 6)
        torch.testing.assert_close(w, ref_w, atol=ATOL, rtol=0)
    else:
        assert w is None and ref_w is None


@pytest.mark.parametrize("need_weights", [False, True])
def test_mha_padded_key_values_do_not_change_output(need_weights):
    torch.manual_seed(2)
    mha = MultiHeadAttention(16, heads=4).eval()
    query, key = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    out, _ = mha(query, key, key, mask, need_weights=need_weights)
    key2 = key.clone()
    key2[0, 3:] = torch.randn(2, 16) * 50
    out2, _ = mha(query, key2, key2, mask, need_weights=need_weights)
    torch.testing.assert_close(out, out2, atol=ATOL, rtol=0)
    key3 = key.clone()
    key3[0, 0] += 1.0  # a real key: must matter
    out3, _ = mha(query, key3, key3, mask, need_weights=need_weights)
    assert not torch.allclose(out[0], out3[0], atol=1e-4)


def test_transformer_block_shapes_weights_and_gradients():
    torch.manual_seed(3)
    block = TransformerBlock(16, heads=4)
    x = torch.randn(2, 5, 16, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    y, w = block(x, mask, need_weights=True)
    assert y.shape == x.shape and w.shape == (2, 4, 5, 5)
    y_fast, w_fast = block(x, mask)
    assert w_fast is None
    torch.testing.assert_close(y, y_fast, atol=ATOL, rtol=0)
    y[mask].pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # padded positions of x are never read by real positions
    assert torch.all(x.grad[1, 3:] == 0)


def test_cross_attention_block_shapes_weights_gradients_and_context_index():
    torch.manual_seed(4)
    block = CrossAttentionBlock(16, heads=2)
    x = torch.randn(3, 4, 16, requires_grad=True)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [True, True, True, False]])
    ctx = torch.randn(2, 6, 16, requires_grad=True)
    ctx_mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    index = torch.tensor([1, 0, 1])
    y, self_w, cross_w = block(x, mask, ctx, ctx_mask, need_weights=True, context_index=index)
    assert y.shape == x.shape
    assert self_w.shape == (3, 2, 4, 4) and cross_w.shape == (3, 2, 4, 6)
    y_ref, _, _ = block(x, mask, ctx[index], ctx_mask[index])
    torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=0)
    _, none_self, none_cross = block(x, mask, ctx, ctx_mask, context_index=index)
    assert none_self is None and none_cross is None
    y[mask].sum().backward()
    assert x.grad.abs().sum() > 0 and ctx.grad.abs().sum() > 0
    assert torch.all(ctx.grad[1, 4:] == 0), "padded context tokens must get no gradient"
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- additive attention

@pytest.mark.parametrize("query_rows", [None, 3], ids=["2d-query", "3d-query"])
def test_additive_attention_masks_normalises_and_ignores_padded_keys(query_rows):
    torch.manual_seed(5)
    att = AdditiveAttention(8, key_dim=6, hidden=5).eval()
    query = torch.randn(2, 8) if query_rows is None else torch.randn(2, query_rows, 8)
    key, value = torch.randn(2, 4, 6), torch.randn(2, 4, 7)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    out, weights = att(query, key, value, mask, need_weights=True)
    rows = () if query_rows is None else (query_rows,)
    assert out.shape == (2, *rows, 7) and weights.shape == (2, *rows, 4)
    assert torch.all(weights[0, ..., 2:] == 0), "padded keys must get exactly zero weight"
    assert torch.all(weights[0, ..., :2] > 0) and torch.all(weights[1] > 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=ATOL, rtol=0)
    fast, none = att(query, key, value, mask)
    assert none is None
    torch.testing.assert_close(out, fast, atol=0, rtol=0)
    # Padded keys and values may hold anything.
    key2, value2 = key.clone(), value.clone()
    key2[0, 2:], value2[0, 2:] = 100.0, -100.0
    torch.testing.assert_close(att(query, key2, value2, mask)[0], out, atol=ATOL, rtol=0)


def test_additive_attention_matches_hand_computation():
    """W_q = W_k = I, no bias, v = (1, 1): score(q, k) = tanh(q1 + k1) + tanh(q2 + k2)."""
    att = AdditiveAttention(2, hidden=2)
    with torch.no_grad():
        att.q_proj.weight.copy_(torch.eye(2))
        att.k_proj.weight.copy_(torch.eye(2))
        att.k_proj.bias.zero_()
        att.v.weight.fill_(1.0)
    query = torch.tensor([[1.0, 0.0]])
    key = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    value = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    out, weights = att(query, key, value, mask, need_weights=True)
    s1, s2 = math.tanh(1.0), math.tanh(2.0) + math.tanh(1.0)
    w1 = math.exp(s1) / (math.exp(s1) + math.exp(s2))
    torch.testing.assert_close(weights, torch.tensor([[w1, 1 - w1, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out, torch.tensor([[w1, 1 - w1]]), atol=1e-6, rtol=0)


def test_additive_attention_gradients_reach_every_parameter():
    torch.manual_seed(6)
    att = AdditiveAttention(4, hidden=3)
    query, key = torch.randn(2, 2, 4), torch.randn(2, 5, 4)
    out, _ = att(query, key, key, torch.tensor([[True] * 5, [True, True, True, False, False]]))
    (out * torch.randn_like(out)).sum().backward()
    for name, p in att.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
