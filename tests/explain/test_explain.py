"""Explanations: painting token weights over boxes, attention maps, rollout, Grad-CAM, the CLI, the sanity check.

Hand-built attentions and boxes have maps worked out by hand; the real fusions are checked against
their own outputs (the layouts agree with the maps they compute themselves); the CLI runs in this
process on the shared tiny trained model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vlfuse.explain.api import TOKEN_METHODS, Explanation
from vlfuse.explain.base import ExplainError, joint_layout
from vlfuse.explain.gradcam import gradcam, saliency, token_gradient
from vlfuse.explain.maps import attention_stack, attention_weights
from vlfuse.explain.occlusion import occlusion
from vlfuse.explain.paint import paint
from vlfuse.explain.rollout import joint_rollout, rollout_weights, two_stream_rollout
from vlfuse.types import Features, FusionOutput, grid_boxes

QUESTION = "What is the shape of the red object?"


def grid(rows: int = 2, cols: int = 2) -> torch.Tensor:
    return grid_boxes(rows, cols, 1)[0]


def block(size: int, rows: slice, cols: slice, value: float) -> np.ndarray:
    expected = np.zeros((size, size), dtype=np.float32)
    expected[rows, cols] = value
    return expected


# --------------------------------------------------------------------------- painting


def test_weight_on_one_box_paints_exactly_that_box():
    weights = torch.zeros(16)
    weights[5] = 1.0  # row 1, column 1 of a 4x4 grid: pixels 2..3 of an 8x8 image
    heat = paint(weights, grid(4, 4), (8, 8)).numpy()
    np.testing.assert_array_equal(heat, block(8, slice(2, 4), slice(2, 4), 0.25))


def test_overlapping_boxes_add_up_and_padding_and_leading_dims():
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 1.0, 1.0]])
    weights = torch.tensor([[0.5, 0.5, 7.0], [0.0, 0.0, 7.0]])
    heat = paint(weights, boxes, (4, 4), mask=torch.tensor([True, True, False])).numpy()
    # each box covers 4 pixels: 0.5 / 4 each; their shared pixel (1, 1) gets both
    expected = block(4, slice(0, 2), slice(0, 2), 0.125) + block(4, slice(1, 3), slice(1, 3), 0.125)
    np.testing.assert_allclose(heat[0], expected, atol=1e-7)
    assert heat[0, 1, 1] == pytest.approx(0.25)
    np.testing.assert_array_equal(heat[1], 0)  # only a padded token had weight: nothing to show


def test_painting_keeps_each_tokens_mass_whatever_the_box_size_and_cut_pixels():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 0.5], [0.1, 0.6, 0.3, 0.9]])  # a big box and a small one off the pixel grid
    heat = paint(torch.tensor([0.3, 0.7]), boxes, (10, 10)).numpy()
    assert heat.sum() == pytest.approx(1.0)
    assert heat[:5].sum() == pytest.approx(0.3) and heat[6:9, 1:3].sum() == pytest.approx(0.7)
    # a non-square image: the same unit box covers the same share of it
    wide = paint(torch.tensor([1.0]), torch.tensor([[0.5, 0.0, 1.0, 1.0]]), (2, 6)).numpy()
    np.testing.assert_allclose(wide, np.array([[0, 0, 0, 1, 1, 1]] * 2) / 6, atol=1e-7)


# --------------------------------------------------------------------------- attention maps


def test_cross_attention_maps_per_word_head_layer_and_mean():
    # 1 example, 2 layers, 2 heads, 2 words, 4 image tokens (a 2x2 grid over a 4x4 image)
    w = torch.zeros(1, 2, 2, 2, 4)
    w[0, 0, :, 0, 0] = 1  # layer 0: word 0 reads token 0 (top left) in both heads
    w[0, 0, 0, 1, 1], w[0, 0, 1, 1, 3] = 1, 1  # word 1: head 0 token 1 (top right), head 1 token 3
    w[0, 1, :, :, 2] = 1  # layer 1: every word reads token 2 (bottom left)
    attentions = {f"layer{i}.text_to_image": w[:, i] for i in range(2)} | {"layer0.text_self": torch.rand(1, 2, 2, 2)}
    text_mask, image_mask = torch.tensor([[True, True]]), torch.ones(1, 4, dtype=torch.bool)
    assert attention_stack(attentions, "cross_attention", 2, 4).shape == (1, 2, 2, 2, 4)

    one = attention_weights(attentions, "cross_attention", text_mask, image_mask, layer=0, head=0)
    maps = paint(one.per_word[0], grid(), (4, 4)).numpy()
    np.testing.assert_array_equal(maps[0], block(4, slice(0, 2), slice(0, 2), 0.25))
    np.testing.assert_array_equal(maps[1], block(4, slice(0, 2), slice(2, 4), 0.25))
    head1 = attention_weights(attentions, "cross_attention", text_mask, image_mask, layer=0, head=-1)
    np.testing.assert_array_equal(head1.per_word[0, 1], [0, 0, 0, 1])
    mean = attention_weights(attentions, "cross_attention", text_mask, image_mask)
    # word 1 over layers and heads: layer 0 splits tokens 1 and 3, layer 1 is all token 2
    np.testing.assert_allclose(mean.per_word[0, 1], [0, 0.25, 0.5, 0.25])
    np.testing.assert_allclose(mean.pooled[0], [0.25, 0.125, 0.5, 0.125])  # the mean of the two words
    with pytest.raises(ExplainError, match="layer 2: this model has 2 layers"):
        attention_weights(attentions, "cross_attention", text_mask, image_mask, layer=2)


def test_padded_words_do_not_count_and_similarity_map_is_one_layer():
    sim = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]])
    weights = attention_weights({"text_to_image": sim}, "similarity_attention", torch.tensor([[True, True, False]]),
                                torch.ones(1, 2, dtype=torch.bool))
    np.testing.assert_allclose(weights.pooled[0], [0.5, 0.5])
    np.testing.assert_array_equal(weights.per_word[0], sim[0])


def test_graph_maps_slice_word_rows_and_image_columns():
    nt, nv = 2, 2  # nodes: words 0..1, image 2..3
    g = torch.tensor([[0.5, 0.0, 0.5, 0.0],  # word 0: half itself, half image token 0
                      [0.2, 0.2, 0.3, 0.3],
                      [0.0, 0.0, 1.0, 0.0],
                      [0.0, 0.0, 0.0, 1.0]])
    weights = attention_weights({"layer0.graph": g[None, None], "adjacency": (g > 0).float()[None]}, "graph",
                                torch.ones(1, nt, dtype=torch.bool), torch.ones(1, nv, dtype=torch.bool))
    np.testing.assert_allclose(weights.per_word[0], [[1.0, 0.0], [0.5, 0.5]])  # renormalised over the image


@pytest.mark.parametrize("fusion", ["concat", "sum", "late", "gated"])
def test_attention_free_fusions_point_to_the_methods_for_every_fusion(fusion):
    attentions = {"modality_weights": torch.full((1, 2), 0.5)} if fusion in ("late", "gated") else {}
    for find in (attention_weights, rollout_weights):
        with pytest.raises(ExplainError, match=f"fusion '{fusion}' has no"):
            find(attentions, fusion, torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ExplainError, match="use a method for every fusion"):
        attention_weights(attentions, fusion, torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool))


def test_gated_token_pool_is_a_map_without_words():
    pool = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    weights = attention_weights({"modality_weights": torch.full((1, 2), 0.5), "image_tokens": pool}, "gated",
                                torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool))
    assert weights.per_word is None and torch.equal(weights.pooled, pool)


def _features(b: int, n: int, dim: int, boxes: bool = False) -> Features:
    tokens = torch.randn(b, n, dim)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[0, -1] = False  # one padded token, to keep the layouts honest
    return Features(tokens, mask, tokens.mean(1), grid_boxes(1, n, b) if boxes else None)


def test_joint_layouts_agree_with_the_fusions_own_word_to_image_maps(tiny_bert_dir):
    from vlfuse.fusion.mmbt import MMBTFusion
    from vlfuse.fusion.single_stream import SingleStreamFusion

    torch.manual_seed(0)
    nt, nv = 3, 4
    cases = [("single_stream", SingleStreamFusion(dim=8, layers=2, heads=2), 8),
             ("mmbt", MMBTFusion(dim=8, path=str(tiny_bert_dir)), 16)]
    for name, fusion, text_dim in cases:
        out = fusion.eval()(_features(2, nv, 8, boxes=True), _features(2, nt, text_dim), need_weights=True)
        spot = joint_layout(name, nt, nv)
        for i in range(2):
            joint = out.attentions[f"layer{i}.joint"][:, :, spot.text, spot.image]
            own = out.attentions[f"layer{i}.text_to_image"]
            torch.testing.assert_close(joint / joint.sum(-1, keepdim=True), own)


# --------------------------------------------------------------------------- rollout


def test_rollout_of_identity_attention_is_identity():
    eye = torch.eye(5).expand(1, 3, 5, 5)
    torch.testing.assert_close(joint_rollout([eye, eye, eye]), torch.eye(5)[None])


def test_rollout_two_layers_by_hand():
    # layer 1: heads [[1,0],[1,0]] and [[0,1],[1,0]] average to A1 = [[.5,.5],[1,0]] -> (A1+I)/2 = [[.75,.25],[.5,.5]]
    layer1 = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])[None]
    layer2 = torch.tensor([[0.0, 1.0], [0.0, 1.0]])[None, None]  # -> [[.5,.5],[0,1]]
    expected = torch.tensor([[0.625, 0.375], [0.5, 0.5]])  # [[.5,.5],[0,1]] @ [[.75,.25],[.5,.5]]
    torch.testing.assert_close(joint_rollout([layer1, layer2])[0], expected)
    torch.testing.assert_close(joint_rollout([layer1, layer2], head=0)[0],
                               torch.tensor([[0.5, 0.5], [0.0, 1.0]]) @ torch.tensor([[1.0, 0.0], [0.5, 0.5]]))


def test_single_stream_rollout_reads_cls_for_the_question_and_word_rows_per_word():
    a = torch.zeros(1, 1, 4, 4)  # [CLS], one word, two image tokens
    a[0, 0, 0, 2] = a[0, 0, 1, 3] = a[0, 0, 2, 2] = a[0, 0, 3, 3] = 1
    weights = rollout_weights({"layer0.joint": a, "layer0.text_to_image": a[:, :, 1:2, 2:]}, "single_stream",
                              torch.ones(1, 1, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool))
    torch.testing.assert_close(weights.pooled[0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(weights.per_word[0], torch.tensor([[0.0, 1.0]]))


def test_cross_attention_rollout_chains_text_self_attention_with_cross_maps_by_hand():
    both_read_word1 = torch.tensor([[0.0, 1.0], [0.0, 1.0]])[None, None]
    attentions = {"layer0.text_self": both_read_word1, "layer0.text_to_image": torch.eye(2)[None, None],
                  "layer1.text_self": both_read_word1,
                  "layer1.text_to_image": torch.tensor([[0.0, 1.0], [0.0, 1.0]])[None, None]}
    # layer 0: M_t = [[.25,.25,.5,0],[0,.5,0,.5]]; layer 1: [[.0625,.1875,.125,.625],[0,.25,0,.75]]
    m_t = two_stream_rollout([attentions["layer0.text_self"], attentions["layer1.text_self"]],
                             [attentions["layer0.text_to_image"], attentions["layer1.text_to_image"]])
    torch.testing.assert_close(m_t[0], torch.tensor([[0.0625, 0.1875, 0.125, 0.625], [0.0, 0.25, 0.0, 0.75]]))
    weights = rollout_weights(attentions, "cross_attention", torch.ones(1, 2, dtype=torch.bool),
                              torch.ones(1, 2, dtype=torch.bool))
    torch.testing.assert_close(weights.per_word[0], torch.tensor([[1 / 6, 5 / 6], [0.0, 1.0]]))
    first = rollout_weights(attentions, "cross_attention", torch.ones(1, 2, dtype=torch.bool),
                            torch.ones(1, 2, dtype=torch.bool), layer=0)
    torch.testing.assert_close(first.per_word[0], torch.eye(2))


def test_rollout_of_real_fusions_gives_distributions():
    from vlfuse.fusion.cross_attention import CoAttentionFusion
    from vlfuse.fusion.graph import GraphFusion

    torch.manual_seed(0)
    image, text = _features(2, 4, 8, boxes=True), _features(2, 3, 8)
    for name, fusion in [("co_attention", CoAttentionFusion(dim=8, layers=2, heads=2)),
                         ("graph", GraphFusion(dim=8, layers=2, heads=2))]:
        out = fusion.eval()(image, text, need_weights=True)
        weights = rollout_weights(out.attentions, name, text.mask, image.mask)
        torch.testing.assert_close(weights.pooled.sum(-1), torch.ones(2))
        assert (weights.pooled[0, -1] == 0).all()  # the padded image token gets nothing


# --------------------------------------------------------------------------- Grad-CAM


class CellColours(nn.Module):
    """Image encoder of the toy: one token per cell of a 2x2 grid, its mean colour."""

    def forward(self, images):
        tokens = nn.functional.avg_pool2d(images, images.shape[-1] // 2).flatten(2).transpose(1, 2)  # [B, 4, 3]
        return Features(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool), tokens.mean(1),
                        grid_boxes(2, 2, len(tokens)))


class NoText(nn.Module):
    def forward(self, ids, mask):
        return Features(torch.zeros(*ids.shape, 3), mask, torch.zeros(len(ids), 3))


class ReadsOneToken(nn.Module):
    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, image, text, need_weights=False):  # nothing from the token once it is masked out
        return FusionOutput(image.tokens[:, self.index] * image.mask[:, self.index, None])


class LinearHead(nn.Linear):
    def forward(self, fused):
        return super().forward(fused.pooled)


def _fusion_model(fusion: nn.Module):
    """A real fusion between the toy's cell-colour tokens (dim 3) and a 2-answer linear head."""
    from vlfuse.models.vlm import VisionLanguageModel

    class FixedText(NoText):  # the same two word vectors in every row
        words = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.2, -0.7]])

        def forward(self, ids, mask):
            return Features(self.words.expand(len(ids), 2, 3), mask, torch.zeros(len(ids), 3))

    return VisionLanguageModel(CellColours(), FixedText(), fusion, LinearHead(3, 2)).eval()


@torch.no_grad()
def _masked(model: nn.Module, images: torch.Tensor, kept: torch.Tensor):
    """The model's logits with only the `kept` image tokens real."""
    import dataclasses

    image = model.image_encoder(images)
    ids, mask = torch.ones(len(images), 2, dtype=torch.long), torch.ones(len(images), 2, dtype=torch.bool)
    return model.from_image_features(dataclasses.replace(image, mask=image.mask & kept), ids, mask)


def _toy(index: int):
    """Answer logits w . (mean colour of cell `index`): the answer depends on that one token only."""
    from vlfuse.models.vlm import VisionLanguageModel

    head = LinearHead(3, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [0.1, 0.1, 0.1]]))
        head.bias.zero_()
    return VisionLanguageModel(CellColours(), NoText(), ReadsOneToken(index), head).eval()


def test_gradcam_concentrates_on_the_one_token_the_answer_depends_on_and_follows_it():
    images = torch.rand(1, 3, 8, 8) * 0.5 + 0.25
    ids, mask = torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.bool)
    for index, (rows, cols) in {1: (slice(0, 4), slice(4, 8)), 2: (slice(4, 8), slice(0, 4))}.items():
        weights, logits, image = gradcam(_toy(index), images, ids, mask)
        assert logits.argmax().item() == 0 and weights.per_word is None
        assert (weights.pooled[0] > 0).tolist() == [i == index for i in range(4)]
        heat = paint(weights.pooled[0], image.boxes[0], (8, 8)).numpy()
        np.testing.assert_allclose(heat, block(8, rows, cols, 1 / 16), atol=1e-7)
    with pytest.raises(ExplainError, match="variant"):
        gradcam(_toy(0), images, ids, mask, variant="nope")


@pytest.mark.parametrize("method", [saliency, occlusion])
def test_saliency_and_occlusion_weigh_only_the_token_the_answer_depends_on(method):
    images = torch.rand(2, 3, 8, 8) * 0.5 + 0.25
    ids, mask = torch.ones(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.bool)
    weights, logits, _ = method(_toy(2), images, ids, mask)
    assert weights.per_word is None and (logits.argmax(-1) == 0).all()
    assert ((weights.pooled > 0) == torch.tensor([False, False, True, False])).all()
    target_logit = images[:, :, 4:, :4].mean((2, 3)).sum(1)  # w = (1, 1, 1) on cell 2's mean colour
    if method is occlusion:  # without cell 2 the logit is 0: the loss is the whole logit
        torch.testing.assert_close(weights.pooled[:, 2], target_logit)
    else:  # d logit / d token = w
        torch.testing.assert_close(weights.pooled[:, 2], torch.full((2,), 3 ** 0.5))


class ReadsPool(nn.Module):
    def forward(self, image, text, need_weights=False):
        return FusionOutput(image.pooled)


def test_occlusion_takes_the_token_out_of_a_mean_pool_for_pooled_fusions():
    from vlfuse.models.vlm import VisionLanguageModel

    model = VisionLanguageModel(CellColours(), NoText(), ReadsPool(), _toy(0).head).eval()
    images = torch.rand(1, 3, 8, 8)
    ids, mask = torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.bool)
    weights, _, image = occlusion(model, images, ids, mask)
    cells = image.tokens[0].sum(-1)  # logit 0 = the mean over cells of (r + g + b)
    without = torch.stack([(cells.sum() - cells[n]) / 3 for n in range(4)])
    torch.testing.assert_close(weights.pooled[0], (cells.mean() - without).clamp_min(0))
    assert weights.pooled[0].gt(0).any()


def test_occlusion_is_the_logit_lost_when_one_token_is_masked_rows_apart():
    from vlfuse.fusion.cross_attention import CrossAttentionFusion

    torch.manual_seed(0)
    model = _fusion_model(CrossAttentionFusion(dim=3, layers=1, heads=1))
    images = torch.rand(2, 3, 8, 8)
    ids, mask = torch.ones(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.bool)
    weights, logits, _ = occlusion(model, images, ids, mask, target=torch.tensor([1, 0]))
    for row, target in enumerate([1, 0]):
        for token in range(4):
            kept = torch.ones(4, dtype=torch.bool)
            kept[token] = False
            alone, _ = _masked(model, images[row:row + 1], kept)
            expected = (logits[row, target] - alone[0, target]).clamp_min(0)
            torch.testing.assert_close(weights.pooled[row, token], expected)


def test_layernorm_fusions_make_the_token_gradient_orthogonal_to_the_token():
    """Why saliency exists: a fusion that LayerNorms its image tokens ignores their scale, so g.A,
    the heart of Grad-CAM, is ~0 for every token however much the answer depends on it."""
    from vlfuse.fusion.cross_attention import CrossAttentionFusion

    torch.manual_seed(0)
    model = _fusion_model(CrossAttentionFusion(dim=3, layers=1, heads=1))
    # each cell one colour, far apart: tokens well above LayerNorm's epsilon
    images = nn.functional.interpolate(torch.randn(2, 3, 2, 2) * 5, scale_factor=4)
    ids, mask = torch.ones(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.bool)
    grad, _, image = token_gradient(model, images, ids, mask)
    cosine = nn.functional.cosine_similarity(grad, image.tokens, dim=-1)
    assert cosine.abs().max() < 1e-3 and (grad.norm(dim=-1) > 0).all()


# --------------------------------------------------------------------------- the API and the CLI


def first_test_image(shapes_root: Path) -> Path:
    return sorted((shapes_root / "images" / "test").glob("*.png"))[0]


def test_explain_api_on_the_trained_model_every_method(trained_run, shapes_root):
    from PIL import Image

    from vlfuse.explain import explain
    from vlfuse.predict import load

    predictor = load(trained_run.model_dir)
    image = first_test_image(shapes_root)
    size = Image.open(image).size
    for method in ("attention", "rollout", "gradcam", "saliency", "occlusion"):
        result = explain(predictor, image, QUESTION, method=method)
        assert result.answer == predictor.predict(image, QUESTION).answer
        assert result.heatmap.shape == size[::-1] and (result.heatmap >= 0).all()
        assert result.heatmap.sum() == pytest.approx(1.0, abs=1e-5) or not result.heatmap.any()
        assert result.tokens[:2] == ["what", "is"]
        if method in TOKEN_METHODS:
            assert result.per_word is None
        else:
            assert result.per_word.shape == (len(result.tokens), *result.heatmap.shape)
    bigger = explain(predictor, Image.open(image).resize((64, 48)), QUESTION, layer=0, head=1)
    assert bigger.heatmap.shape == (48, 64)  # maps come back at the size of the image given
    with pytest.raises(ExplainError, match="method must be one of"):
        explain(predictor, image, QUESTION, method="lime")


def test_cli_explain_writes_a_png(trained_run, shapes_root, tmp_path, cli_main):
    out = tmp_path / "map.png"
    result = cli_main("explain", trained_run.model_dir, "--image", first_test_image(shapes_root), "--question",
                      QUESTION, "--out", out, "--method", "rollout")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "figure:" in result.stdout


def _concat_model_dir(trained_run, path: Path) -> Path:
    """The trained run's vocabularies with an (untrained) attention-free fusion: enough to explain."""
    import copy

    from vlfuse.models.factory import build_model
    from vlfuse.models.saved import load_model_dir, save_model_dir

    saved = load_model_dir(trained_run.model_dir, weights=False)
    config = copy.deepcopy(saved.config)
    config.model.fusion = {"name": "concat", "hidden": 16}
    model = build_model(config, saved.tokenizer.get_vocab_size(), len(saved.answers))
    return save_model_dir(path, model, config, saved.tokenizer, saved.answers)


def test_cli_explain_one_line_errors_and_gradcam_for_attention_free(trained_run, shapes_root, tmp_path, cli_main):
    concat = _concat_model_dir(trained_run, tmp_path / "concat")
    image = first_test_image(shapes_root)
    result = cli_main("explain", concat, "--image", image, "--question", QUESTION, "--out", tmp_path / "a.png")
    assert result.returncode == 2 and not (tmp_path / "a.png").exists()
    assert result.stderr.strip() == ("error: fusion 'concat' has no attention to show; "
                                     "use a method for every fusion: 'saliency', 'occlusion' or 'gradcam'")
    missing = cli_main("explain", trained_run.model_dir, "--image", tmp_path / "nope.png", "--question", QUESTION,
                       "--out", tmp_path / "b.png")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "nope.png" in missing.stderr and "not found" in missing.stderr
    ok = cli_main("explain", concat, "--image", image, "--question", QUESTION, "--out", tmp_path / "c.png",
                  "--method", "gradcam")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "c.png").is_file()


# --------------------------------------------------------------------------- the sanity check


def _explanation(heatmap: np.ndarray, tokens: list[str], per_word: np.ndarray | None = None,
                 boxes: np.ndarray | None = None, answer: str = "circle") -> Explanation:
    return Explanation(answer, 1.0, heatmap.astype(np.float32), per_word, tokens, " ".join(tokens), "attention",
                       np.zeros((*heatmap.shape, 3), np.uint8),
                       np.array([[0.0, 0.0, 1.0, 1.0]]) if boxes is None else boxes)


def test_sanity_measure_on_a_hand_made_scene():
    from vlfuse.data.shapes import Scene, ShapeObject
    from vlfuse.explain.sanity import Item, measure

    # a square of radius 3 at (8, 8): pixel centres within 2.7 of it, columns and rows 5..10
    scene = Scene(32, (ShapeObject("red", "square", 8.0, 8.0, 3), ShapeObject("blue", "circle", 24.0, 24.0, 3)))
    item = Item(QUESTION, Path("x.png"), "square", "shape", scene, "red")
    on_object = block(32, slice(5, 11), slice(5, 11), 1 / 36)
    elsewhere = block(32, slice(20, 26), slice(20, 26), 1 / 36)
    tokens = QUESTION.lower().rstrip("?").split() + ["?"]
    per_word = np.stack([elsewhere] * len(tokens))
    per_word[tokens.index("red")] = on_object
    row = measure(_explanation(on_object, tokens, per_word, answer="square"), item)
    assert row == pytest.approx({"object_mass": 1.0, "object_area": 36 / 1024, "box_mass": 1.0,
                                 "box_area": 36 / 1024, "uniform_mass": 36 / 1024, "pointing": 1.0,
                                 "correct": 1.0, "word_mass": 1.0})
    half = measure(_explanation((on_object + elsewhere) / 2, tokens), item)
    assert half["object_mass"] == pytest.approx(0.5) and half["correct"] == 0.0 and "word_mass" not in half


def test_sanity_on_generated_scenes_with_known_maps(shapes_root, tiny_config, tmp_path):
    from vlfuse.data.shapes import object_mask
    from vlfuse.explain.sanity import FAMILIES, measure_all, sanity_items

    items = sanity_items(tiny_config(shapes_root, tmp_path), "train", limit=None)
    assert items and all(item.family in FAMILIES and f"the {item.color} object" in item.question for item in items)
    assert len(sanity_items(tiny_config(shapes_root, tmp_path), "train", limit=5)) == 5
    lookup = {(item.image_path, item.question): item for item in items}

    def perfect(image_path, question):
        mask = object_mask(lookup[image_path, question].scene, lookup[image_path, question].color)
        return _explanation(mask / mask.sum(), question.split())

    report = measure_all(items, perfect)
    overall = report["overall"]
    assert overall["questions"] == len(items) and overall["object_mass"] == pytest.approx(1.0)
    assert overall["pointing"] == 1.0 and overall["object_lift"] == pytest.approx(1 / overall["object_area"])
    assert sum(f["questions"] for f in report["families"].values()) == len(items)
    flat = measure_all(items, lambda image, question: _explanation(np.full((32, 32), 1 / 1024), []))["overall"]
    assert flat["object_mass"] == pytest.approx(flat["object_area"]) and flat["object_lift"] == pytest.approx(1.0)


def test_cli_explain_sanity_writes_json(trained_run, tmp_path, cli_main):
    out = tmp_path / "sanity.json"
    result = cli_main("explain-sanity", trained_run.model_dir, "--split", "train", "--limit", "6", "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["method"] == "attention" and report["overall"]["questions"] == 6
    assert 0 <= report["overall"]["object_mass"] <= 1 and report["overall"]["object_area"] > 0
    assert result.stdout.startswith("overall") and "x" in result.stdout
