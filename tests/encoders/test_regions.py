"""Region proposals against hand-drawn scenes, and the region encoder's Features contract."""

from __future__ import annotations

import random

import torch

from vlfuse.data.shapes import random_scene, render
from vlfuse.data.images import image_to_tensor
from vlfuse.encoders.regions import RegionCache, RegionImageEncoder, crop_regions, find_regions


def _canvas(size: int = 32, background=(1.0, 1.0, 1.0)) -> torch.Tensor:
    return torch.tensor(background).view(3, 1, 1).repeat(1, size, size)


def test_two_squares_give_two_regions_largest_first_with_exact_boxes_and_colours():
    image = _canvas()
    image[:, 2:6, 3:7] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)        # 4x4 red
    image[:, 20:26, 10:16] = torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1)     # 6x6 blue
    r = find_regions(image[None], max_regions=4)
    assert r.mask[0].tolist() == [True, True, False, False]
    assert torch.allclose(r.boxes[0, 0] * 32, torch.tensor([10.0, 20.0, 16.0, 26.0]))
    assert torch.allclose(r.boxes[0, 1] * 32, torch.tensor([3.0, 2.0, 7.0, 6.0]))
    assert torch.allclose(r.colors[0, 0], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(r.areas[0, :2], torch.tensor([36 / 1024, 16 / 1024]))
    assert torch.allclose(r.centroids[0, 0] * 32, torch.tensor([13.0, 23.0]))


def test_background_is_taken_from_the_border_not_assumed_white():
    image = _canvas(background=(0.0, 0.0, 0.0))
    image[:, 8:12, 8:12] = 1.0
    r = find_regions(image[None])
    assert int(r.mask.sum()) == 1
    assert torch.allclose(r.boxes[0, 0] * 32, torch.tensor([8.0, 8.0, 12.0, 12.0]))


def test_specks_below_min_area_are_ignored_and_an_empty_image_is_one_whole_region():
    image = _canvas()
    image[:, 5, 5] = 0.0
    r = find_regions(image[None], min_area=4)
    assert int(r.mask.sum()) == 1 and torch.allclose(r.boxes[0, 0], torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_l_shaped_object_is_one_component():
    image = _canvas()
    image[:, 4:20, 4:6] = 0.0
    image[:, 18:20, 4:20] = 0.0
    r = find_regions(image[None])
    assert int(r.mask.sum()) == 1
    assert torch.allclose(r.boxes[0, 0] * 32, torch.tensor([4.0, 4.0, 20.0, 20.0]))


def test_regions_match_the_objects_of_rendered_shapes_scenes():
    rng = random.Random(0)
    for _ in range(20):
        scene = random_scene(rng, size=64)
        image = image_to_tensor(render(scene), 64).float() / 255
        r = find_regions(image[None], max_regions=10)
        assert int(r.mask.sum()) == len(scene.objects)
        centres = r.centroids[0, : len(scene.objects)] * 64
        for o in scene.objects:
            nearest = (centres - torch.tensor([o.x, o.y])).norm(dim=-1).min()
            assert nearest < 2.5  # a triangle's pixel centroid sits a little off its placement centre


def test_crop_of_a_box_shows_what_is_inside_it():
    image = _canvas()
    image[:, 8:16, 8:16] = torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1)
    boxes = torch.tensor([[[8 / 32, 8 / 32, 16 / 32, 16 / 32]]])
    crop = crop_regions(image[None], boxes, size=8, pad=0.0)
    assert crop.shape == (1, 1, 3, 8, 8)
    assert torch.allclose(crop[0, 0, :, 2:6, 2:6], torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1).expand(3, 4, 4))


def test_region_encoder_contract_masks_padding_and_gets_gradients():
    torch.manual_seed(0)
    image = _canvas()
    image[:, 2:6, 3:7] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    image[:, 20:26, 10:16] = torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1)
    encoder = RegionImageEncoder(dim=16, max_regions=5, crop_size=8, channels=[4])
    out = encoder(torch.stack([image, _canvas()]))
    assert out.tokens.shape == (2, 5, 16) and out.pooled.shape == (2, 16)
    assert out.mask.tolist() == [[True, True, False, False, False], [True, False, False, False, False]]
    assert torch.all(out.tokens[~out.mask] == 0)
    # a random projection: the plain sum of LayerNorm outputs is constant, so its gradient is zero
    (out.pooled * torch.randn_like(out.pooled)).sum().backward()
    assert encoder.crop_cnn[0].weight.grad.abs().sum() > 0
    assert encoder.geometry[0].weight.grad.abs().sum() > 0


def test_region_tokens_depend_on_position():
    image = _canvas()
    image[:, 2:6, 3:7] = 0.0
    moved = _canvas()
    moved[:, 22:26, 23:27] = 0.0
    encoder = RegionImageEncoder(dim=16, crop_size=8, channels=[4]).eval()
    a, b = encoder(torch.stack([image, moved])).tokens[:, 0]
    assert not torch.allclose(a, b, atol=1e-3)


def test_geometry_bias_starts_neutral_and_learns_from_relative_position():
    torch.manual_seed(0)
    image = _canvas()
    image[:, 2:6, 3:7] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    image[:, 20:26, 10:16] = torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1)
    image[:, 25:30, 25:30] = torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1)
    plain = RegionImageEncoder(dim=16, max_regions=5, crop_size=8, channels=[4], layers=1, heads=2)
    torch.manual_seed(0)
    biased = RegionImageEncoder(dim=16, max_regions=5, crop_size=8, channels=[4], layers=1, heads=2,
                                geometry_bias=True)
    images = torch.stack([image, _canvas()])
    bias = biased._pair_bias(find_regions(images, 5).centroids)
    assert bias.shape == (2, 2, 5, 5) and torch.all(bias == 0)  # zero-initialised output layer
    out = biased(images)
    assert torch.allclose(out.tokens, plain(images).tokens, atol=1e-6)
    (out.pooled * torch.randn_like(out.pooled)).sum().backward()
    assert biased.pair_bias[-1].weight.grad.abs().sum() > 0


def _rendered_scenes(count: int, seed: int = 0) -> torch.Tensor:
    rng = random.Random(seed)
    return torch.stack([image_to_tensor(render(random_scene(rng, size=64)), 64).float() / 255 for _ in range(count)])


def _assert_same_regions(a, b) -> None:
    for field in ("boxes", "centroids", "colors", "areas", "mask"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_cached_region_proposals_equal_the_computed_ones_and_are_searched_once_per_image():
    images = _rendered_scenes(6)
    batch = images[[0, 1, 2, 0, 3]]  # image 0 twice in one batch
    searched = []

    def propose(x):
        searched.append(len(x))
        return find_regions(x, 10)

    cache = RegionCache(capacity=100)
    first = cache(batch, propose)
    _assert_same_regions(first, find_regions(batch, 10))
    assert searched == [4]  # the repeated image is searched once
    again = cache(images[[3, 4, 0, 5]], propose)  # two seen, two new
    _assert_same_regions(again, find_regions(images[[3, 4, 0, 5]], 10))
    assert searched == [4, 2] and len(cache.rows) == 6


def test_a_full_region_cache_stops_growing_but_still_answers_correctly():
    images = _rendered_scenes(5, seed=1)
    cache = RegionCache(capacity=2)
    _assert_same_regions(cache(images, lambda x: find_regions(x, 10)), find_regions(images, 10))
    assert len(cache.rows) == 2
    _assert_same_regions(cache(images.flip(0), lambda x: find_regions(x, 10)), find_regions(images.flip(0), 10))


def test_region_encoder_gives_the_same_tokens_with_and_without_its_cache():
    images = _rendered_scenes(4, seed=2)
    torch.manual_seed(0)
    cached = RegionImageEncoder(dim=16, crop_size=8, channels=[4], layers=1, heads=2).eval()
    torch.manual_seed(0)
    plain = RegionImageEncoder(dim=16, crop_size=8, channels=[4], layers=1, heads=2, cache_regions=0).eval()
    assert plain.region_cache is None
    expected = plain(images).tokens
    assert torch.equal(cached(images).tokens, expected)  # fills the cache
    assert torch.equal(cached(images).tokens, expected)  # reads it
    assert len(cached.region_cache.rows) == 4
    assert "region_cache" not in " ".join(cached.state_dict())  # a cache, not part of the saved model
