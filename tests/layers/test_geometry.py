"""Pair geometry and the attention that reads it: ranks worked by hand, padding, reduction to plain
attention, gradients, and the cross-attention fusion's anchored and word geometry."""

from __future__ import annotations

import pytest
import torch

from vlfuse.encoders.regions import RegionImageEncoder
from vlfuse.fusion.cross_attention import CrossAttentionFusion
from vlfuse.layers.attention import MultiHeadAttention
from vlfuse.layers.geometry import pair_features_dim, pair_geometry
from vlfuse.types import Features, masked_mean

# three boxes: A at the top left, B far off at the centre, C just right of A; then one padded box
BOXES = torch.tensor([[[0.0, 0.0, 0.1, 0.1], [0.5, 0.5, 0.6, 0.6], [0.2, 0.0, 0.3, 0.1], [0.0, 0.0, 0.0, 0.0]]])
MASK = torch.tensor([[True, True, True, False]])


def test_pair_geometry_ranks_and_offsets_by_hand():
    pairs = pair_geometry(BOXES, MASK, ranks=4)
    assert pairs.shape == (1, 4, 4, pair_features_dim(4))
    seen_from_a = pairs[0, 0]
    # nearest-first ranks from A: A itself 0, C (0.2 away) 1, B (0.57 away) 2; the padded box none
    assert seen_from_a[:, 4:8].argmax(-1)[:3].tolist() == [0, 2, 1]
    assert seen_from_a[3, 4:].sum() == 0
    # furthest-first ranks from A: B 0, C 1, A itself 2
    assert seen_from_a[:, 8:12].argmax(-1)[:3].tolist() == [2, 0, 1]
    torch.testing.assert_close(seen_from_a[2, :4], torch.tensor([0.2 * 4, 0.0, 0.2 * 4, 0.0]))
    assert seen_from_a[0, 3] == 1 and seen_from_a[1, 3] == 0  # the "same token" flag


def test_pair_geometry_of_real_tokens_ignores_padding_and_caps_ranks():
    g = torch.Generator().manual_seed(0)
    corner = torch.rand(2, 12, 2, generator=g) * 0.8
    boxes = torch.cat([corner, corner + 0.1], -1)
    mask = torch.ones(2, 12, dtype=torch.bool)
    padded = torch.cat([boxes, torch.rand(2, 3, 4, generator=g)], 1)
    padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], 1)
    torch.testing.assert_close(pair_geometry(padded, padded_mask, 5)[:, :12, :12], pair_geometry(boxes, mask, 5))
    ranks = pair_geometry(boxes, mask, 5)[..., 4:9]
    assert (ranks.sum(-1) == 1).all()  # ranks 5..11 share the last slot
    assert (ranks[..., -1].sum(-1) == 12 - 4).all()


def test_relative_attention_with_zero_pairs_is_plain_attention_and_trains_its_weights():
    torch.manual_seed(0)
    attention = MultiHeadAttention(16, heads=2, relative_dim=6)
    plain = MultiHeadAttention(16, heads=2)
    plain.load_state_dict({k: v for k, v in attention.state_dict().items() if not k.startswith("relative")})
    query, key = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    key_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    zero = torch.zeros(2, 3, 5, 6)
    out, weights = attention(query, key, key, key_mask, relative=zero)
    torch.testing.assert_close(out, plain(query, key, key, key_mask)[0], atol=1e-5, rtol=0)
    assert weights[1, :, :, 3:].abs().max() == 0  # padded keys stay unread
    out, _ = attention(query, key, key, key_mask, relative=torch.randn(2, 3, 5, 6))
    out.sum().backward()
    assert attention.relative_k.grad.abs().sum() > 0 and attention.relative_v.grad.abs().sum() > 0


def test_relative_pairs_steer_attention():
    """A large learnt weight on one pair feature makes every query attend to the key flagged there."""
    torch.manual_seed(0)
    attention = MultiHeadAttention(8, heads=1, relative_dim=1)
    with torch.no_grad():
        attention.relative_k.zero_()
        attention.q_proj.weight.zero_()
        attention.q_proj.bias.fill_(1.0)
        attention.relative_k.fill_(50.0)
    flag = torch.zeros(1, 2, 4, 1)
    flag[0, 0, 2], flag[0, 1, 1] = 1.0, 1.0
    _, weights = attention(torch.randn(1, 2, 8), torch.randn(1, 4, 8), torch.randn(1, 4, 8), relative=flag)
    assert weights[0, 0].argmax(-1).tolist() == [2, 1]


def _image(b: int = 2, k: int = 5, dim: int = 16, seed: int = 0) -> Features:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, k, dim, generator=g)
    mask = torch.ones(b, k, dtype=torch.bool)
    mask[-1, -1] = False
    corner = torch.rand(b, k, 2, generator=g) * 0.8
    return Features(tokens, mask, masked_mean(tokens, mask), torch.cat([corner, corner + 0.1], -1))


def _text(b: int, t: int = 4, dim: int = 16, seed: int = 1) -> Features:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, t, dim, generator=g)
    mask = torch.arange(t)[None] < torch.tensor([t, 2, 3, t, 1][:b])[:, None]
    return Features(tokens, mask, masked_mean(tokens, mask))


GEOMETRIES = [{"anchored_geometry": True}, {"word_geometry": True}, {"anchored_geometry": True, "word_geometry": True}]


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_fusion_reads_geometry_one_image_per_question_group_and_keeps_padding_out(geometry):
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(16, layers=2, heads=2, **geometry).eval()
    image, text = _image(), _text(5)
    index = torch.tensor([0, 0, 1, 1, 1])
    out = fusion(image, text, image_index=index)
    torch.testing.assert_close(out.pooled, fusion(image.index_select(index), text).pooled, atol=1e-5, rtol=0)
    moved = Features(image.tokens, image.mask, image.pooled, image.boxes.roll(1, dims=1))
    assert not torch.allclose(out.pooled, fusion(moved, text, image_index=index).pooled, atol=1e-4)
    junk = image.tokens.clone()
    junk[-1, -1] = 100.0
    junk_boxes = image.boxes.clone()
    junk_boxes[-1, -1] = torch.tensor([0.9, 0.9, 1.0, 1.0])
    padded = Features(junk, image.mask, image.pooled, junk_boxes)
    torch.testing.assert_close(fusion(padded, text, image_index=index).pooled, out.pooled, atol=1e-5, rtol=0)
    longer = torch.cat([text.tokens, torch.full((5, 2, 16), 50.0)], 1)  # two more padded words, of junk
    longer_mask = torch.cat([text.mask, torch.zeros(5, 2, dtype=torch.bool)], 1)
    padded_text = Features(longer, longer_mask, text.pooled)
    torch.testing.assert_close(fusion(image, padded_text, image_index=index).pooled, out.pooled, atol=1e-5, rtol=0)
    no_boxes = Features(image.tokens, image.mask, image.pooled)  # a layout-free encoder: read plainly
    assert fusion(no_boxes, text, image_index=index).pooled.shape == (5, 16)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_fusion_gradients_reach_the_pair_weights_and_the_first_layer_focus(geometry):
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(16, layers=2, heads=2, **geometry)
    fusion(_image(), _text(2)).pooled.sum().backward()
    second = fusion.blocks[1]
    readers = [attn for attn, key in ((second.cross_attn, "anchored_geometry"), (second.self_attn, "word_geometry"))
               if geometry.get(key)]
    for attn in readers:
        assert attn.relative_k.grad.abs().sum() > 0 and attn.relative_v.grad.abs().sum() > 0
    assert fusion.blocks[0].cross_attn.q_proj.weight.grad.abs().sum() > 0
    for attn in (fusion.blocks[0].cross_attn, fusion.blocks[0].self_attn):  # the first layer has no focus yet
        assert not hasattr(attn, "relative_k")


def test_word_geometry_is_the_geometry_between_what_the_two_words_found():
    """The second layer's word pair (t, s) carries sum_i sum_j a(t -> i) a(s -> j) pairs(i, j), a the
    first layer's attention on the image averaged over heads: worked term by term."""
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(16, layers=2, heads=2, word_geometry=True).eval()
    image, text = _image(), _text(2)
    seen = {}
    fusion.blocks[1].self_attn.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(relative=kwargs["relative"]), with_kwargs=True)
    out = fusion(image, text, need_weights=True)
    focus = out.attentions["layer0.text_to_image"].mean(1)  # [B, T, K]
    pairs = pair_geometry(image.boxes, image.mask)
    b, t, s = 0, 0, 2
    expected = sum(focus[b, t, i] * focus[b, s, j] * pairs[b, i, j]
                   for i in range(pairs.shape[1]) for j in range(pairs.shape[2]))
    torch.testing.assert_close(seen["relative"][b, t, s], expected, atol=1e-5, rtol=1e-5)
    assert seen["relative"].shape == (2, text.tokens.shape[1], text.tokens.shape[1], pair_features_dim())


def test_region_encoder_with_relative_geometry_on_a_grid_of_boxes():
    torch.manual_seed(0)
    encoder = RegionImageEncoder(dim=16, max_regions=4, layers=1, heads=2, relative_geometry=True)
    images = torch.zeros(2, 3, 32, 32)
    images[:, 0, 2:8, 2:8] = 1.0
    images[:, 1, 20:28, 4:10] = 1.0
    images[1, 2, 10:16, 22:30] = 1.0
    out = encoder(images)
    assert out.tokens.shape == (2, 4, 16) and out.mask.sum(-1).tolist() == [2, 3]
    assert (out.tokens[~out.mask] == 0).all()
    out.tokens.sum().backward()
    assert encoder.blocks[0].attn.relative_k.grad.abs().sum() > 0


def test_distance_ranks_by_comparison_equal_a_stable_sort():
    from vlfuse.layers.geometry import _distance_ranks

    g = torch.Generator().manual_seed(0)
    distance = torch.rand(3, 7, 7, generator=g)
    distance[0, 0, 3] = distance[0, 0, 5]  # a tie: the earlier token ranks first
    distance[1, :, 5:] = float("inf")  # padded tokens rank last
    torch.testing.assert_close(_distance_ranks(distance), distance.argsort(dim=-1, stable=True).argsort(dim=-1))
