"""Formula-level tests of the pooled-vector fusions: sum, product, outer product, MFB, late, gated.

tests/fusion/test_fusion.py checks the shared contract; these check that each module computes its formula.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlfuse.errors import ConfigError
from vlfuse.fusion.bilinear import LowRankBilinearFusion, OuterProductFusion
from vlfuse.fusion.gated import GatedModalityAttention
from vlfuse.fusion.late import LateFusion
from vlfuse.fusion.pointwise import ProductFusion, SumFusion
from vlfuse.heads.classifier import ClassifierHead
from vlfuse.models.factory import FUSIONS, HEADS, build_component
from vlfuse.types import Features, FusionOutput, masked_mean

DIM = 8
ATOL = 1e-5


def features(b: int = 3, n: int = 4, seed: int = 0, lengths: list[int] | None = None) -> Features:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, n, DIM, generator=g)
    lengths = torch.tensor(lengths or [n] * b)
    mask = torch.arange(n)[None, :] < lengths[:, None]
    return Features(tokens, mask, masked_mean(tokens, mask))


def pooled_only(pooled: torch.Tensor) -> Features:
    """Features whose pooled vector is `pooled` (tokens are irrelevant to pooled-vector fusions)."""
    b = pooled.shape[0]
    return Features(torch.zeros(b, 1, DIM), torch.ones(b, 1, dtype=torch.bool), pooled)


def pad(f: Features, extra: int, seed: int) -> Features:
    g = torch.Generator().manual_seed(seed)
    b, _, d = f.tokens.shape
    junk = torch.randn(b, extra, d, generator=g) * 10
    return Features(torch.cat([f.tokens, junk], 1), torch.cat([f.mask, torch.zeros(b, extra, dtype=torch.bool)], 1),
                    f.pooled)


def set_identity(linear: nn.Linear) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.eye(*linear.weight.shape))
        linear.bias.zero_()


def mixed_difference(joint, v1, v2, t1, t2) -> torch.Tensor:
    """f(v1,t1) - f(v1,t2) - f(v2,t1) + f(v2,t2): zero for every pair iff f splits into g(v) + h(t)."""
    return joint(v1, t1) - joint(v1, t2) - joint(v2, t1) + joint(v2, t2)


# ---------------------------------------------------------------- registration

def test_factory_names():
    expected = {"sum": SumFusion, "product": ProductFusion, "outer_product": OuterProductFusion,
                "bilinear": LowRankBilinearFusion, "late": LateFusion, "gated": GatedModalityAttention}
    for name, cls in expected.items():
        assert FUSIONS[name] is cls


def test_config_hyper_parameters_are_type_checked():
    fusion = build_component(FUSIONS, {"name": "bilinear", "factors": 1, "out_dim": 32}, "model.fusion", dim=DIM)
    assert fusion.image_proj.out_features == 32
    fusion = build_component(FUSIONS, {"name": "outer_product", "rank_dim": 4}, "model.fusion", dim=DIM)
    assert fusion.mlp[0].in_features == 16
    with pytest.raises(ConfigError, match="factors"):
        build_component(FUSIONS, {"name": "bilinear", "factors": 2.5}, "model.fusion", dim=DIM)
    with pytest.raises(ConfigError, match="combine"):
        build_component(FUSIONS, {"name": "late", "combine": "median"}, "model.fusion", dim=DIM)
    with pytest.raises(ConfigError, match="token_attention"):
        build_component(FUSIONS, {"name": "gated", "token_attention": "yes"}, "model.fusion", dim=DIM)


# ---------------------------------------------------------------- point-wise

def test_product_with_identity_weights_is_the_hadamard_product():
    torch.manual_seed(0)
    fusion = ProductFusion(dim=DIM, hidden=16).eval()
    set_identity(fusion.image_proj)
    set_identity(fusion.text_proj)
    v, t = torch.randn(3, DIM), torch.randn(3, DIM)
    by_hand = torch.tanh(v) * torch.tanh(t)
    torch.testing.assert_close(fusion.joint(v, t), by_hand)
    torch.testing.assert_close(fusion(pooled_only(v), pooled_only(t)).pooled, fusion.mlp(by_hand))


def test_sum_with_identity_weights_is_the_sum():
    torch.manual_seed(0)
    fusion = SumFusion(dim=DIM, hidden=16).eval()
    set_identity(fusion.image_proj)
    set_identity(fusion.text_proj)
    v, t = torch.randn(3, DIM), torch.randn(3, DIM)
    torch.testing.assert_close(fusion.joint(v, t), v + t)
    torch.testing.assert_close(fusion(pooled_only(v), pooled_only(t)).pooled, fusion.mlp(fusion.norm(v + t)))


def test_sum_is_separable_and_multiplicative_fusions_are_not():
    g = torch.Generator().manual_seed(1)
    v1, v2, t1, t2 = (torch.randn(4, DIM, generator=g) for _ in range(4))
    torch.manual_seed(0)
    additive = mixed_difference(SumFusion(dim=DIM).joint, v1, v2, t1, t2)
    torch.testing.assert_close(additive, torch.zeros_like(additive), atol=ATOL, rtol=0)
    for cls in (ProductFusion, OuterProductFusion, LowRankBilinearFusion):
        torch.manual_seed(0)
        interaction = mixed_difference(cls(dim=DIM).eval().joint, v1, v2, t1, t2)
        assert interaction.abs().amax(-1).gt(1e-3).all(), f"{cls.__name__} looks separable"


# ---------------------------------------------------------------- bilinear

def test_outer_product_holds_every_pairwise_product():
    torch.manual_seed(0)
    fusion = OuterProductFusion(dim=DIM, rank_dim=4).eval()
    v, t = torch.randn(2, DIM), torch.randn(2, DIM)
    p, q = fusion.image_proj(v), fusion.text_proj(t)
    z = fusion.joint(v, t)
    assert z.shape == (2, 16)
    for i in range(4):
        for j in range(4):
            torch.testing.assert_close(z[:, i * 4 + j], p[:, i] * q[:, j])


def test_mfb_is_sum_pooled_power_and_l2_normalised():
    torch.manual_seed(0)
    fusion = LowRankBilinearFusion(dim=DIM, factors=3, out_dim=5).eval()
    v, t = torch.randn(4, DIM), torch.randn(4, DIM)
    z = fusion.joint(v, t)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(4))
    # by hand: output o sums factors o*k .. o*k+k-1 of the element-wise product, then sign*sqrt, then L2
    product = fusion.image_proj(v) * fusion.text_proj(t)
    raw = torch.stack([product[:, o * 3:(o + 1) * 3].sum(-1) for o in range(5)], -1)
    signed = raw.sign() * raw.abs().sqrt()
    torch.testing.assert_close(z, signed / signed.norm(dim=-1, keepdim=True), atol=1e-3, rtol=0)


def test_mfb_with_one_factor_is_the_mlb_low_rank_bilinear_form():
    torch.manual_seed(0)
    fusion = LowRankBilinearFusion(dim=DIM, factors=1, out_dim=6).eval()
    v, t = torch.randn(2, DIM), torch.randn(2, DIM)
    U, b_u = fusion.image_proj.weight, fusion.image_proj.bias
    V, b_v = fusion.text_proj.weight, fusion.text_proj.bias
    bilinear = (v @ U.T + b_u) * (t @ V.T + b_v)  # z_o = (u_o . v + b)(v_o . t + b): a rank-1 bilinear form
    signed = bilinear.sign() * bilinear.abs().sqrt()
    torch.testing.assert_close(fusion.joint(v, t), signed / signed.norm(dim=-1, keepdim=True), atol=1e-3, rtol=0)


def test_mfb_gradient_is_finite_at_exact_zeros():
    # dropout can zero a whole sum-pooling group (always, with one factor): sqrt'(0) must not poison training
    torch.manual_seed(0)
    fusion = LowRankBilinearFusion(dim=DIM, factors=1, out_dim=6)
    with torch.no_grad():
        fusion.image_proj.weight[:3].zero_()
        fusion.image_proj.bias[:3].zero_()
    v, t = torch.randn(2, DIM, requires_grad=True), torch.randn(2, DIM, requires_grad=True)
    z = fusion.joint(v, t)
    assert torch.all(z[:, :3] == 0)
    fusion(pooled_only(v), pooled_only(t)).pooled.sum().backward()
    for grad in [v.grad, t.grad] + [p.grad for p in fusion.parameters()]:
        assert torch.isfinite(grad).all()


# ---------------------------------------------------------------- late

def test_late_mean_and_max_combine_the_per_modality_vectors():
    image, text = features(seed=0), features(seed=1)
    for combine, reduce in (("mean", lambda z: z.mean(1)), ("max", lambda z: z.amax(1))):
        torch.manual_seed(0)
        fusion = LateFusion(dim=DIM, hidden=16, combine=combine).eval()
        z = fusion.per_modality(image, text)
        torch.testing.assert_close(z[:, 0], fusion.image_mlp(image.pooled))
        torch.testing.assert_close(z[:, 1], fusion.text_mlp(text.pooled))
        out = fusion(image, text, need_weights=True)
        torch.testing.assert_close(out.pooled, reduce(z))
        w = out.attentions["modality_weights"]
        assert w.shape == (3, 2)
        torch.testing.assert_close(w.sum(-1), torch.ones(3))
    # "max": each weight is the share of dimensions that modality won
    won_by_image = (z[:, 0] >= z[:, 1]).float().mean(-1)
    torch.testing.assert_close(w[:, 0], won_by_image)


def test_late_weighted_with_a_linear_head_averages_logits():
    torch.manual_seed(0)
    fusion = LateFusion(dim=DIM, hidden=16).eval()
    with torch.no_grad():
        fusion.modality_logits.copy_(torch.tensor([1.0, -0.5]))
    head = ClassifierHead(DIM, num_classes=5, hidden=0)
    image, text = features(seed=0), features(seed=1)
    out = fusion(image, text, need_weights=True)
    w = torch.tensor([1.0, -0.5]).softmax(0)
    torch.testing.assert_close(out.attentions["modality_weights"], w.expand(3, 2))
    z = fusion.per_modality(image, text)
    per_modality_logits = [head(FusionOutput(z[:, i])) for i in range(2)]
    torch.testing.assert_close(head(out), w[0] * per_modality_logits[0] + w[1] * per_modality_logits[1])


@pytest.mark.parametrize("combine", ["weighted", "mean", "max"])
def test_late_has_no_dead_parameters(combine):
    fusion = LateFusion(dim=DIM, hidden=16, combine=combine)
    fusion(features(seed=0), features(seed=1)).pooled.pow(2).sum().backward()
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_late_rejects_unknown_combine():
    with pytest.raises(ValueError, match="combine"):
        LateFusion(dim=DIM, combine="median")


# ---------------------------------------------------------------- gated

def test_gated_is_the_alpha_weighted_sum_of_projections():
    torch.manual_seed(0)
    fusion = GatedModalityAttention(dim=DIM, hidden=16).eval()
    image, text = features(seed=0), features(seed=1)
    out = fusion(image, text, need_weights=True)
    alpha = out.attentions["modality_weights"]
    assert alpha.shape == (3, 2) and torch.all(alpha > 0)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(3))
    v, t = image.pooled, text.pooled
    s_v = fusion.score(torch.tanh(fusion.image_score(v))).squeeze(-1)
    s_t = fusion.score(torch.tanh(fusion.text_score(t))).squeeze(-1)
    # two-way softmax = the GMU's sigmoid gate on the score difference
    torch.testing.assert_close(alpha[:, 0], torch.sigmoid(s_v - s_t))
    expected = alpha[:, :1] * fusion.image_proj(v) + alpha[:, 1:] * fusion.text_proj(t)
    torch.testing.assert_close(out.pooled, expected)


def test_gated_equal_scores_give_equal_weights():
    torch.manual_seed(0)
    fusion = GatedModalityAttention(dim=DIM, hidden=16).eval()
    fusion.text_score.load_state_dict(fusion.image_score.state_dict())
    same = features(seed=0)
    alpha = fusion(same, same, need_weights=True).attentions["modality_weights"]
    torch.testing.assert_close(alpha, torch.full((3, 2), 0.5))


def test_gated_saturated_gate_ignores_the_other_modality():
    # scorers that always rate the image far above the text: the output is P_v v whatever the text says
    torch.manual_seed(0)
    fusion = GatedModalityAttention(dim=DIM, hidden=16).eval()
    with torch.no_grad():
        direction = fusion.score.weight[0].sign()  # tanh(±100) = ±1 along it: the extreme scores ±20 sum|w|
        fusion.score.weight.mul_(20)
        for scorer, sign in ((fusion.image_score, 1), (fusion.text_score, -1)):
            scorer.weight.zero_()
            scorer.bias.copy_(sign * 100 * direction)
    image = features(seed=0)
    a = fusion(image, features(seed=1), need_weights=True)
    b = fusion(image, features(seed=2))
    torch.testing.assert_close(a.attentions["modality_weights"][:, 0], torch.ones(3))
    torch.testing.assert_close(a.pooled, b.pooled)
    torch.testing.assert_close(a.pooled, fusion.image_proj(image.pooled))


def test_gated_token_attention_ignores_padding():
    torch.manual_seed(0)
    fusion = GatedModalityAttention(dim=DIM, hidden=16, token_attention=True).eval()
    image = features(n=4, seed=0, lengths=[4, 4, 3])
    text = features(n=5, seed=1, lengths=[5, 2, 3])
    ref = fusion(image, text, need_weights=True)
    padded = fusion(pad(image, 2, seed=3), pad(text, 3, seed=4))
    torch.testing.assert_close(padded.pooled, ref.pooled, atol=ATOL, rtol=0)
    for key, f in (("image_tokens", image), ("text_tokens", text)):
        w = ref.attentions[key]
        assert w.shape == f.mask.shape
        assert torch.all(w[~f.mask] == 0)
        torch.testing.assert_close(w.sum(-1), torch.ones(3))
    # the token pool, not the encoder's pooled vector, is what is fused
    other_pooled = Features(image.tokens, image.mask, torch.randn(3, DIM))
    torch.testing.assert_close(fusion(other_pooled, text).pooled, ref.pooled)


def test_gated_token_attention_gradients():
    torch.manual_seed(0)
    fusion = GatedModalityAttention(dim=DIM, hidden=16, token_attention=True)
    image = features(n=4, seed=0, lengths=[4, 4, 3])
    text = features(n=5, seed=1, lengths=[5, 2, 3])
    image.tokens.requires_grad_(True)
    text.tokens.requires_grad_(True)
    fusion(image, text).pooled.pow(2).sum().backward()
    for f in (image, text):
        assert f.tokens.grad[f.mask].abs().sum(-1).gt(0).all()
        assert torch.all(f.tokens.grad[~f.mask] == 0)
    for name, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- classifier head

def test_classifier_hidden_zero_is_one_linear_layer():
    head = build_component(HEADS, {"name": "classifier", "hidden": 0}, "model.head", dim=DIM, num_classes=5)
    assert isinstance(head.mlp, nn.Linear)
    assert sum(p.numel() for p in head.parameters()) == DIM * 5 + 5
    pooled = torch.randn(3, DIM)
    torch.testing.assert_close(head.train()(FusionOutput(pooled)), pooled @ head.mlp.weight.T + head.mlp.bias)


def test_classifier_default_is_unchanged():
    head = ClassifierHead(DIM, num_classes=5)
    assert [type(m) for m in head.mlp] == [nn.Linear, nn.GELU, nn.Dropout, nn.Linear]
    assert head.mlp[0].out_features == 256 and head.mlp[2].p == 0.1
    with pytest.raises(ValueError, match="hidden"):
        ClassifierHead(DIM, num_classes=5, hidden=-1)
