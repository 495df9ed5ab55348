"""CLIP InfoNCE: a hand-computed value, the limit of perfect alignment, the learnable clamped scale,
and the gathered loss over 2 gloo processes == the loss of the concatenated batch."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vlfuse.losses.contrastive import ContrastiveLoss, _info_nce, contrastive_loss, gather_with_grad


def test_two_by_two_matches_hand_computation():
    # Unit rows at 0 and 90 degrees: cosine similarities are [[1, 0], [0, 1]] for both directions.
    image = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # not unit length: the loss normalises
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    s = 2.0
    # Each row: -log(e^s / (e^s + e^0)), the same in both directions.
    expected = -math.log(math.exp(s) / (math.exp(s) + 1.0))
    assert contrastive_loss(image, text, s).item() == pytest.approx(expected, rel=1e-6)


def test_two_by_two_asymmetric_directions():
    image = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    s = 1.0
    sim = [[1.0, 0.0], [0.6, 0.8]]  # image i . text j
    i2t = [-math.log(math.exp(sim[i][i]) / sum(math.exp(v) for v in sim[i])) for i in range(2)]
    t2i = [-math.log(math.exp(sim[j][j]) / sum(math.exp(sim[i][j]) for i in range(2))) for j in range(2)]
    expected = (sum(i2t) / 2 + sum(t2i) / 2) / 2
    assert contrastive_loss(image, text, s).item() == pytest.approx(expected, rel=1e-6)


def test_perfect_alignment_goes_to_zero_as_scale_grows():
    x = torch.eye(4)
    # Orthonormal pairs: each row's loss is log(1 + 3 e^-s), falling to 0 as s grows.
    for s in (1.0, 5.0, 10.0, 20.0):
        expected = math.log1p(3 * math.exp(-s))
        assert contrastive_loss(x, x.clone(), s).item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert contrastive_loss(x, x.clone(), 100.0).item() < 1e-6


def test_module_scale_is_clamped_and_learnable():
    loss = ContrastiveLoss(temperature=0.07)
    assert loss.scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        loss.log_scale.fill_(10.0)  # far above ln 100
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    value = loss(image, text)
    assert loss.scale.item() == pytest.approx(100.0, rel=1e-5)
    value.backward()
    assert loss.log_scale.grad is not None and torch.isfinite(loss.log_scale.grad)
    with torch.no_grad():
        loss.log_scale.fill_(-3.0)
    loss(image, text)
    assert loss.scale.item() == pytest.approx(1.0)
    fixed = ContrastiveLoss(temperature=0.5, learnable=False)
    assert not list(fixed.parameters()) and "log_scale" in dict(fixed.named_buffers())


def test_gather_without_process_group_is_local():
    assert not dist.is_initialized()
    g = torch.Generator().manual_seed(1)
    image, text = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    assert torch.equal(contrastive_loss(image, text, 5.0, gather=True), contrastive_loss(image, text, 5.0))
    rows, offset = gather_with_grad(image)
    assert rows is image and offset == 0


def test_local_queries_against_global_keys_average_to_global_loss():
    # The gathered path without processes: each "rank" scores its rows against all keys.
    g = torch.Generator().manual_seed(2)
    image = F.normalize(torch.randn(8, 5, generator=g), dim=-1)
    text = F.normalize(torch.randn(8, 5, generator=g), dim=-1)
    per_rank = [_info_nce(image[r * 4:(r + 1) * 4], text[r * 4:(r + 1) * 4], image, text, r * 4, 3.0)
                for r in range(2)]
    assert (sum(per_rank) / 2).item() == pytest.approx(contrastive_loss(image, text, 3.0).item(), rel=1e-6)


@pytest.mark.parametrize("bad", [
    (torch.randn(3, 4), torch.randn(3, 5)),
    (torch.randn(3, 4), torch.randn(2, 4)),
    (torch.randn(0, 4), torch.randn(0, 4)),
    (torch.randn(3), torch.randn(3)),
], ids=["width", "rows", "empty", "1d"])
def test_bad_inputs_raise_value_error(bad):
    with pytest.raises(ValueError):
        contrastive_loss(*bad, 1.0)


# ---- two real processes over gloo ----

def _reference(image, text, scale, sizes):
    """Single process, whole batch: per-rank objective sum_r mean_{rows of r} row loss, and its grads."""
    image, text = image.clone().requires_grad_(), text.clone().requires_grad_()
    scale = torch.tensor(scale, requires_grad=True)
    u, v = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    labels = torch.arange(len(u))
    rows = (F.cross_entropy(scale * u @ v.T, labels, reduction="none")
            + F.cross_entropy(scale * v @ u.T, labels, reduction="none")) / 2
    per_rank = [chunk.mean() for chunk in rows.split(sizes)]
    sum(per_rank).backward()
    return [p.item() for p in per_rank], image.grad, text.grad, scale.grad


def _worker(rank: int, world: int, init_file: str, out_dir: str, cases):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = []
        for image, text, scale, sizes in cases:
            start = sum(sizes[:rank])
            local_image = image[start:start + sizes[rank]].clone().requires_grad_()
            local_text = text[start:start + sizes[rank]].clone().requires_grad_()
            s = torch.tensor(scale, requires_grad=True)
            loss = contrastive_loss(local_image, local_text, s, gather=True)
            loss.backward()
            results.append((loss.detach(), local_image.grad, local_text.grad, s.grad))
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_loss_on_two_processes_matches_single_process():
    g = torch.Generator().manual_seed(3)
    cases = [(torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g), 4.0, [4, 4]),
             (torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g), 2.5, [3, 2])]  # uneven
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, str(Path(tmp) / "store"), tmp, cases), nprocs=2, join=True)
        ranks = [torch.load(Path(tmp) / f"rank{r}.pt") for r in range(2)]

    for case, (image, text, scale, sizes) in enumerate(cases):
        per_rank, image_grad, text_grad, scale_grad = _reference(image, text, scale, sizes)
        for r in range(2):
            assert ranks[r][case][0].item() == pytest.approx(per_rank[r], rel=1e-5)
        # Each rank's embedding gradient is the gradient of the sum of all ranks' losses
        # (what DDP then averages); the scale's gradients sum to the same total.
        torch.testing.assert_close(torch.cat([ranks[r][case][1] for r in range(2)]), image_grad)
        torch.testing.assert_close(torch.cat([ranks[r][case][2] for r in range(2)]), text_grad)
        torch.testing.assert_close(sum(ranks[r][case][3] for r in range(2)), scale_grad)
        if sizes[0] == sizes[1]:  # equal shares: the mean over ranks is the whole-batch loss
            whole = contrastive_loss(image, text, scale).item()
            assert sum(ranks[r][case][0].item() for r in range(2)) / 2 == pytest.approx(whole, rel=1e-5)


def test_edited_caption_loss_is_each_images_softmax_over_its_caption_and_its_edits():
    from vlfuse.losses.contrastive import edited_caption_loss

    image = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    text = F.normalize(torch.tensor([[1.0, 0.2], [0.3, 1.0], [1.0, 0.0]]), dim=-1)
    edited = F.normalize(torch.tensor([[[0.5, 1.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]),
                         dim=-1)
    made = torch.tensor([[True, True], [True, False], [False, False]])  # image 2: no edit, left out
    scale = 5.0
    expected = []
    for i, columns in ((0, [0, 1]), (1, [0])):
        logits = scale * torch.stack([image[i] @ text[i], *[image[i] @ edited[i, c] for c in columns]])
        expected.append(-logits.log_softmax(0)[0])
    got = edited_caption_loss(image, text, edited, made, scale)
    assert got.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-6)

    text = text.clone().requires_grad_()
    edited_caption_loss(image, text, edited, made, scale).backward()
    assert text.grad[:2].abs().sum() > 0 and text.grad[2].abs().sum() == 0  # the image with no edit adds nothing

    nothing = edited_caption_loss(image, text, edited, torch.zeros_like(made), scale)
    assert nothing.item() == 0 and nothing.requires_grad
