"""Self-critical sequence training: sampled captions, the fixed-idf CIDEr-D reward, the policy gradient
that raises it, and a two-stage run (cross-entropy, then SCST) through the training loop."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from vlfuse.data.caption_tokens import CaptionSpecials
from vlfuse.heads.caption_decoders import TransformerCaptionDecoder
from vlfuse.heads.generation import greedy_search, sample_search
from vlfuse.metrics.captioning import CiderD, cider_d_scores, tokenize
from vlfuse.models.captioning import CaptioningModel
from vlfuse.tasks.captioning.scst import SelfCritical
from vlfuse.train.optim import stage_schedule
from vlfuse.types import Features
from conftest import captioning_config

DIM, VOCAB = 16, 12
SPECIALS = CaptionSpecials(bos=1, eos=2, blocked=(0, 1))


class FixedLogits:
    """A decoder whose next-token logits never change: what sampling should reproduce."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def start(self, image: Features) -> int:
        return image.tokens.shape[0]

    def step(self, rows: int, tokens: torch.Tensor):
        return self.logits.expand(rows, -1), rows


class GivenFeatures(nn.Module):
    """An image encoder whose cached features are already the image tokens."""

    def from_frozen(self, tokens: torch.Tensor) -> Features:
        return Features(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool), tokens.mean(1))


def test_sampling_draws_from_the_decoders_distribution_and_is_seeded():
    logits = torch.tensor([[0.0, 0.0, 0.0, 2.0, 1.0, 0.0]])
    decoder = FixedLogits(logits)
    image = Features(torch.zeros(6000, 1, 4), torch.ones(6000, 1, dtype=torch.bool), torch.zeros(6000, 4))
    drawn = sample_search(decoder, image, 1, 2, max_length=1, blocked=(0, 1),
                          generator=torch.Generator().manual_seed(0))
    first = torch.tensor([ids[0] for ids in drawn.ids])
    # the first word: never a blocked token nor EOS (min_length 1), else softmax over tokens 3, 4, 5
    allowed = torch.tensor([3, 4, 5])
    expected = logits[0, allowed].softmax(0)
    observed = torch.stack([(first == t).float().mean() for t in allowed])
    assert torch.isin(first, allowed).all() and torch.allclose(observed, expected, atol=0.02)
    again = sample_search(decoder, image, 1, 2, max_length=1, blocked=(0, 1),
                          generator=torch.Generator().manual_seed(0))
    assert again.ids == drawn.ids
    # the summed log-prob is the model's own (over the whole vocabulary), as greedy and beam search report it
    assert drawn.log_probs[0] == pytest.approx(float(logits.log_softmax(-1)[0, first[0]]))


def test_fixed_idf_cider_equals_the_corpus_score_on_words_and_on_ids():
    references = [["a dog runs on the grass", "a brown dog running"], ["two men ride bikes", "men riding bicycles"],
                  ["a child in a pool", "a kid swimming"]]
    candidates = ["a dog running on grass", "two men on bikes", "a child swimming in a pool"]
    expected = cider_d_scores(candidates, references)
    words = [[tokenize(r) for r in rs] for rs in references]
    assert CiderD(words).scores([tokenize(c) for c in candidates], words) == pytest.approx(expected, abs=1e-12)
    vocab = {w: i for i, w in enumerate(sorted({w for t in [*candidates, *sum(references, [])] for w in tokenize(t)}))}
    ids = [[tuple(vocab[w] for w in r) for r in rs] for rs in words]
    scored = CiderD(ids).scores([tuple(vocab[w] for w in tokenize(c)) for c in candidates], ids)
    assert scored == pytest.approx(expected, abs=1e-12)


def _batch(captions: list[list[int]], image_index: list[int], features: torch.Tensor) -> dict:
    rows = [[1, *c, 2] for c in captions]
    width = max(map(len, rows))
    return {"image_features": features, "image_index": torch.tensor(image_index),
            "input_ids": torch.tensor([r + [0] * (width - len(r)) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])}


def test_self_critical_training_raises_the_reward_of_samples_and_of_greedy_captions():
    torch.manual_seed(0)
    model = CaptioningModel(GivenFeatures(), TransformerCaptionDecoder(DIM, VOCAB, max_length=8, layers=1, heads=2,
                                                                       dropout=0.0))
    features = torch.randn(2, 3, DIM)
    references = [[3, 4, 5], [6, 7, 8]]
    batch = _batch(references, [0, 1], features)
    scst = SelfCritical([[[1, 3, 4, 5, 2]], [[1, 6, 7, 8, 2]], [[1, 9, 10, 11, 2]], [[1, 3, 9, 2]]], SPECIALS,
                        samples=8, max_length=5)

    def greedy_reward() -> float:
        ids = greedy_search(model.decoder.eval(), GivenFeatures().from_frozen(features), 1, 2, 5, SPECIALS.blocked).ids
        return sum(scst.cider.scores([tuple(c) for c in ids], [[tuple(r)] for r in references])) / 2

    before = greedy_reward()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    rewards = []
    for step in range(200):
        out = scst.losses(model, batch, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        rewards.append(float(out["reward"]))
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    assert last > 3 * first and last > 3.0, rewards  # 7.5 is the most a 3-word caption can get here
    assert greedy_reward() > before + 2.0


def test_the_advantages_of_an_images_samples_cancel():
    """Each sample's baseline is its siblings' mean reward, so samples that all score the same give no gradient."""
    torch.manual_seed(0)
    model = CaptioningModel(GivenFeatures(), TransformerCaptionDecoder(DIM, VOCAB, max_length=8, layers=1, heads=2,
                                                                       dropout=0.0))
    scst = SelfCritical([[[1, 3, 2]], [[1, 4, 2]]], SPECIALS, samples=4, max_length=3)
    scst.cider.scores = lambda candidates, references: [1.5] * len(candidates)  # every sample rewarded alike
    out = scst.losses(model, _batch([[3], [4]], [0, 1], torch.randn(2, 3, DIM)), torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert float(out["reward"]) == 1.5 and out["loss"].item() == 0.0
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.parameters())


def test_stage_schedule_scales_the_second_stage():
    factor = stage_schedule(warmup=2, second_stage=10, total_steps=30, second_scale=0.1)
    assert factor(1) == 1.0 and factor(10) == pytest.approx(0.05) and factor(11) == pytest.approx(0.1)


@pytest.mark.parametrize("setting, message", [("captioning.scst_epochs=2", "scst_epochs"),
                                              ("captioning.scst_samples=1", "scst_samples"),
                                              ("captioning.scst_lr=0", "scst_lr")])
def test_bad_scst_settings_are_refused(setting, message, shapes_root, tmp_path):
    from vlfuse.errors import ConfigError
    from vlfuse.tasks.captioning.data import check_captioning_config

    extra = [] if setting.startswith("captioning.scst_epochs") else ["captioning.scst_epochs=1"]
    with pytest.raises(ConfigError, match=message):
        check_captioning_config(captioning_config(shapes_root, tmp_path, "train.epochs=2", *extra, setting))


def test_a_run_trains_by_cross_entropy_then_by_scst_and_patience_waits_for_it(shapes_root, tmp_path):
    from vlfuse.tasks import train

    config = captioning_config(
        shapes_root, tmp_path / "run", "data.test=null", "train.epochs=3", "captioning.scst_epochs=1",
        "captioning.scst_samples=3", "data.val={annotations: captions/captions_train.json, images: images/train}",
        "captioning.select_on=bleu_1", "captioning.patience=1", "train.log_every_n_steps=1")
    result = train(config, progress=False)
    with (result.out_dir / "logs" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    trained = [r for r in rows if r.get("train_loss")]
    cross_entropy = [r for r in trained if r.get("train_token_acc")]
    self_critical = [r for r in trained if r.get("train_reward")]
    assert cross_entropy and self_critical
    assert not any(r.get("train_token_acc") and r.get("train_reward") for r in trained)  # one loss a step
    assert max(int(r["step"]) for r in cross_entropy) < min(int(r["step"]) for r in self_critical)
    validations = [r for r in rows if r.get("val_bleu_1")]
    assert len(validations) == 3  # patience 1 did not stop the cross-entropy stage before SCST
    assert (result.out_dir / "eval.json").is_file()
