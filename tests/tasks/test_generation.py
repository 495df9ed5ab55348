"""Task generation: the VQ-VAE, the prior's causal order, the faithfulness scorer, and train -> generate -> eval."""

from __future__ import annotations

import json
import random

import pytest
import torch
from PIL import Image

from vlfuse.config import load_config
from vlfuse.data.shapes import caption, random_scene, render
from vlfuse.errors import ConfigError, DataError
from vlfuse.tasks.generation.faithfulness import NamedObject, read_caption, read_images, score
from vlfuse.tasks.generation.model import VQVAE, TextToCodes, TextToImage, fit_palette, nearest_colour
from vlfuse.train.optim import stage_schedule
from vlfuse.tasks.generation.predict import Generator, build_generator, generate_tensors, load_generator
from vlfuse.tasks.generation.rank import Ranker, best_of


def _scenes(n: int, seed: int = 0):
    rng = random.Random(seed)
    scenes = [random_scene(rng, 64) for _ in range(n)]
    images = torch.stack([torch.from_numpy(__import__("numpy").array(render(s))).permute(2, 0, 1) for s in scenes])
    return scenes, images


# --------------------------------------------------------------------------- model

def test_vqvae_shapes_and_round_trip():
    torch.manual_seed(0)
    vq = VQVAE(codes=16, code_dim=8, channels=16, downsample=3).train()
    images = torch.rand(2, 3, 64, 64)
    out = vq(images)  # the first training batch places every code on an encoding
    assert out["codes"].shape == (2, 8, 8) and out["images"].shape == (2, 3, 64, 64)
    assert out["reconstruction"].ndim == 0 and torch.isfinite(out["commitment"])
    vq.eval()
    with torch.no_grad():
        codes = vq.encode(images)
        decoded = vq.decode(codes)
    assert codes.dtype == torch.long and codes.shape == (2, 8, 8) and int(codes.max()) < 16
    assert decoded.shape == (2, 3, 64, 64) and 0 <= float(decoded.min()) and float(decoded.max()) <= 1
    # codes -> vectors -> codes: every code's own vector quantises back to it (or to an identical twin)
    book = vq.quantizer.codebook
    assert torch.equal(book[vq.quantizer.nearest(book[codes.flatten()])], book[codes.flatten()])


def test_vqvae_learns_to_reconstruct_scenes():
    torch.manual_seed(0)
    _, images = _scenes(4)
    images = images.float() / 255
    vq = VQVAE(codes=32, code_dim=8, channels=32, downsample=3)
    optimiser = torch.optim.Adam(vq.parameters(), 3e-3)
    losses = []
    for _ in range(40):
        out = vq(images)
        loss = out["reconstruction"] + 0.25 * out["commitment"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(out["reconstruction"].item())
    assert losses[-1] < 0.5 * losses[0]


def test_fit_palette_finds_the_flat_colours_of_the_scenes():
    _, images = _scenes(20)
    palette = fit_palette(images, 10)
    distinct = images.permute(0, 2, 3, 1).reshape(-1, 3).unique(dim=0).float() / 255
    assert palette.shape == (10, 3)
    assert {tuple(c) for c in palette.tolist()} == {tuple(c) for c in distinct.tolist()}  # spare ones repeat
    noisy = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    fitted = fit_palette(noisy, 8, seed=1)
    assert fitted.shape == (8, 3) and torch.equal(fitted, fit_palette(noisy, 8, seed=1))
    assert len(fitted.unique(dim=0)) == 8 and 0 <= float(fitted.min()) and float(fitted.max()) <= 1


def test_palette_vqvae_paints_only_palette_colours_and_learns_sharp_scenes():
    torch.manual_seed(0)
    _, images = _scenes(4)
    palette = fit_palette(images, 8)
    images = images.float() / 255
    images = torch.cat([images[:, :, :32, :32], images[:, :, 32:, 32:]])  # corners: a faster test
    vq = VQVAE(codes=32, code_dim=8, channels=32, downsample=2, palette=8)
    vq.palette.copy_(palette)
    assert nearest_colour(images, palette).shape == (8, 32, 32)
    optimiser = torch.optim.Adam(vq.parameters(), 1e-2)
    for _ in range(200):
        out = vq(images)
        optimiser.zero_grad()
        (out["reconstruction"] + 0.25 * out["commitment"]).backward()
        optimiser.step()
    with torch.no_grad():
        painted = vq.eval().decode(vq.encode(images))
    colours = {tuple(c) for c in palette.tolist()}
    assert {tuple(c) for c in painted.permute(0, 2, 3, 1).reshape(-1, 3).tolist()} <= colours
    objects = (images < 1).any(1)  # not the white background
    assert (painted == images).all(1)[objects].float().mean() > 0.8  # exactly right, not blurred
    assert "palette" in vq.state_dict()  # saved with the weights


def test_quantizer_gradient_passes_straight_through():
    vq = VQVAE(codes=8, code_dim=4, channels=8, downsample=2).eval()
    images = torch.rand(1, 3, 16, 16, requires_grad=True)
    out = vq(images)
    out["reconstruction"].backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_prior_is_causal():
    """Changing a later code never changes the logits at or before it (raster order)."""
    torch.manual_seed(0)
    prior = TextToCodes(vocab_size=20, codes=10, grid=4, dim=16, layers=2, heads=2, text_layers=1).eval()
    ids, mask = torch.randint(1, 20, (1, 6)), torch.ones(1, 6, dtype=torch.bool)
    codes = torch.randint(0, 10, (1, 4, 4))
    changed = codes.clone()
    changed[0, 2, 1] = (codes[0, 2, 1] + 1) % 10  # flat position 9
    a, b = prior(codes, ids, mask), prior(changed, ids, mask)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)  # the logit at 9 predicts code 9 from codes 0..8
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_cached_sampling_matches_full_forward():
    """The key/value cache of sampling computes what the full forward computes."""
    torch.manual_seed(0)
    prior = TextToCodes(vocab_size=20, codes=10, grid=3, dim=16, layers=2, heads=2, text_layers=1).eval()
    ids, mask = torch.randint(1, 20, (2, 5)), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    codes = prior.sample(ids, mask, temperature=1e-4, generator=torch.Generator().manual_seed(0))  # ~greedy
    logits = prior(codes, ids, mask)
    assert torch.equal(logits.argmax(-1), codes.flatten(1))


def test_guided_sampling_mixes_the_caption_and_no_caption_logits():
    """Cached guided sampling draws the argmax of none + g x (caption - none), the full forward's mix."""
    torch.manual_seed(0)
    prior = TextToCodes(vocab_size=20, codes=10, grid=3, dim=16, layers=2, heads=2, text_layers=1,
                        unconditional=True).eval()
    with torch.no_grad():
        prior.null_text.normal_()  # a trained-looking context, not the near-zero start
    ids, mask = torch.randint(1, 20, (2, 5)), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    codes = prior.sample(ids, mask, temperature=1e-4, generator=torch.Generator().manual_seed(0), guidance=3.0)
    with torch.no_grad():
        caption = prior(codes, ids, mask)
        none = prior(codes, ids, mask, drop=torch.ones(2, dtype=torch.bool))
    assert torch.equal((none + 3.0 * (caption - none)).argmax(-1), codes.flatten(1))
    assert not torch.equal(caption.argmax(-1), codes.flatten(1))  # guidance changed the draw
    # guidance 0 is the "no caption" prior alone: every caption draws the same grid
    other = torch.randint(1, 20, (2, 5))
    draw = [prior.sample(i, mask, generator=torch.Generator().manual_seed(1), guidance=0.0) for i in (ids, other)]
    assert torch.equal(draw[0], draw[1])
    # in training, a dropped caption is not read at all
    dropped = [prior(codes, i, mask, drop=torch.tensor([True, False])) for i in (ids, other)]
    assert torch.equal(dropped[0][0], dropped[1][0]) and not torch.equal(dropped[0][1], dropped[1][1])


def test_guidance_needs_a_prior_trained_without_captions_too(tmp_path):
    with pytest.raises(ConfigError, match="generation.guidance.*caption_dropout"):
        build_generator(load_config("configs/generation_shapes.yaml", ["generation.guidance=2",
                                                                     "generation.caption_dropout=0"]), 20)
    with pytest.raises(ConfigError, match="caption_dropout"):
        build_generator(load_config("configs/generation_shapes.yaml", ["generation.caption_dropout=1"]), 20)
    with pytest.raises(ValueError, match="no caption"):
        TextToCodes(vocab_size=20, codes=10, grid=3, dim=16, layers=1, heads=2, text_layers=1).sample(
            torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool), guidance=2.0)


def test_generate_is_seeded_and_padding_free():
    torch.manual_seed(0)
    model = TextToImage(vocab_size=20, image_size=32, codes=8, code_dim=4, channels=8, downsample=3, dim=16,
                        layers=1, heads=2, text_layers=1).eval()
    ids, mask = torch.randint(1, 20, (1, 5)), torch.ones(1, 5, dtype=torch.bool)
    first = model.generate(ids, mask, generator=torch.Generator().manual_seed(3))
    again = model.generate(ids, mask, generator=torch.Generator().manual_seed(3))
    assert first.shape == (1, 3, 32, 32) and torch.equal(first, again)
    padded_ids, padded_mask = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1), torch.cat(
        [mask, torch.zeros(1, 3, dtype=torch.bool)], 1)
    assert torch.allclose(model.generate(padded_ids, padded_mask, generator=torch.Generator().manual_seed(3)), first)


def test_best_of_keeps_each_texts_highest_scored_candidate():
    candidates = torch.arange(2 * 3, dtype=torch.float).view(2, 3, 1, 1, 1).expand(2, 3, 3, 2, 2)
    picked = best_of(candidates, torch.tensor([[0.1, 0.9, 0.3], [0.5, -1.0, 0.7]]))
    assert picked.shape == (2, 3, 2, 2) and picked[0].eq(1).all() and picked[1].eq(5).all()


def _tiny_generator(**generation) -> Generator:
    config = load_config("configs/generation_shapes.yaml", ["data.image_size=32", "model.dim=16",
                                                            "generation.codes=8", "generation.code_dim=4",
                                                            "generation.channels=8", "generation.layers=1",
                                                            "generation.heads=2", "generation.text_layers=1",
                                                            "generation.guidance=1", "generation.top_k=8",
                                                            *[f"generation.{k}={v}" for k, v in generation.items()]])
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[UNK]", "a", "red", "blue", "circle", "square", "at", "the", "top", "left", "right"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    torch.manual_seed(0)
    return Generator(build_generator(config, len(words)).eval(), config, tokenizer)


def test_generate_then_rank_keeps_the_rankers_best_candidate(trained_retrieval):
    texts = ["a red circle at the top left", "a blue square at the right"]
    k = 4
    ranked = generate_tensors(_tiny_generator(candidates=k, ranker=trained_retrieval.model_dir), texts, seed=5)
    # the same draws without ranking: each text's k candidates side by side, one random stream
    drawn = generate_tensors(_tiny_generator(), [t for t in texts for _ in range(k)], seed=5)
    scores = Ranker(trained_retrieval.model_dir).match(drawn, [t for t in texts for _ in range(k)]).view(2, k)
    assert ranked.shape == (2, 3, 32, 32)
    for i in range(2):
        assert torch.equal(ranked[i], drawn[i * k + int(scores[i].argmax())])
    assert len({drawn[j].sum().item() for j in range(k)}) > 1  # the candidates differ, so the pick matters


def test_generate_then_rank_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="generation.candidates.*generation.ranker"):
        generate_tensors(_tiny_generator(candidates=3), ["a red circle"])
    with pytest.raises(ConfigError, match="generation.candidates"):
        load_config("configs/generation_shapes.yaml", ["generation.candidates=0"])
    with pytest.raises(DataError, match="not a vlfuse model directory") as error:
        generate_tensors(_tiny_generator(candidates=2, ranker=tmp_path), ["a red circle"])
    assert str(tmp_path) in str(error.value)


def test_stage_schedule_restarts_for_the_prior():
    factor = stage_schedule(warmup=2, second_stage=10, total_steps=30)
    assert factor(0) == 0.5 and factor(1) == 1.0 and factor(9) < 0.1
    assert factor(10) == 0.5 and factor(11) == 1.0 and factor(29) < 0.1


# --------------------------------------------------------------------------- faithfulness

def test_read_caption():
    objects = read_caption("a red circle at the top left, an orange square in the centre, a gray triangle at the bottom")
    assert objects == [NamedObject("red", "circle", 0, 0), NamedObject("orange", "square", 1, 1),
                       NamedObject("gray", "triangle", 2, 1)]
    with pytest.raises(ValueError, match="purple"):
        read_caption("a purple circle at the top left")


def test_rendered_scenes_score_full_and_blank_scores_zero():
    scenes, images = _scenes(40)
    named = [read_caption(caption(s)) for s in scenes]
    perfect = score(named, read_images(images), 64)
    assert perfect["recall"] == perfect["precision"] == perfect["images_exact"] == 1.0
    assert perfect["objects_named"] == 240
    blank = score(named[:3], read_images(torch.full((3, 3, 64, 64), 255, dtype=torch.uint8)), 64)
    assert blank["recall"] == blank["precision"] == blank["color_present"] == 0.0 and blank["objects_found"] == 0


def test_faithfulness_hand_worked():
    """One scene: swap one object's shape, move another to another cell, drop a third: 3 of 6 right."""
    scenes, images = _scenes(1, seed=5)
    scene = scenes[0]
    named = read_caption(caption(scene))
    edited = list(named)
    edited[0] = NamedObject(named[0].color, next(s for s in ("circle", "square", "triangle") if s != named[0].shape),
                            named[0].row, named[0].col)
    edited[1] = NamedObject(named[1].color, named[1].shape, (named[1].row + 1) % 3, (named[1].col + 1) % 3)
    edited[2] = NamedObject("red" if named[2].color != "red" else "green", named[2].shape, named[2].row, named[2].col)
    found = read_images(images)
    result = score([edited[:2] + edited[3:]], found, 64)  # 5 named (one dropped), 6 found
    assert result["objects_correct"] == 3 and result["objects_named"] == 5 and result["objects_found"] == 6
    assert result["recall"] == pytest.approx(3 / 5) and result["precision"] == pytest.approx(3 / 6)
    assert result["shape_right"] == pytest.approx(4 / 5) and result["place_right"] == pytest.approx(4 / 5)


# --------------------------------------------------------------------------- config and CLI

def test_config_checks(tmp_path):
    with pytest.raises(ConfigError, match="generation.downsample"):
        load_config("configs/generation_shapes.yaml", ["generation.downsample=9"])
    config = load_config("configs/generation_shapes.yaml")
    assert config.task == "generation" and config.generation.vq_epochs < config.train.epochs


def test_train_generate_eval_through_the_cli(cli_main, shapes_root, tmp_path, trained_retrieval):
    run = tmp_path / "run"
    sizes = ["data.image_size=32", "model.dim=16", "generation.codes=8", "generation.code_dim=4",
             "generation.channels=8", "generation.layers=1", "generation.heads=2", "generation.text_layers=1",
             "train.epochs=2", "generation.vq_epochs=1", "train.batch_images=4", "train.warmup_steps=1",
             "generation.palette=4", "generation.caption_dropout=0.5"]
    done = cli_main("train", "configs/generation_shapes.yaml", "--set", f"data.root={shapes_root}",
               "--set", f"out_dir={run}", *[a for s in sizes for a in ("--set", s)])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stage 1 (VQ-VAE) epochs 1-1" in done.stderr and "generated images" in done.stdout
    metrics = json.loads((run / "eval.json").read_text())
    assert metrics["task"] == "generation" and metrics["generated"]["objects_named"] == 6
    assert (run / "model" / "model.safetensors").is_file() and not list((run / "model").glob("*.pt*"))
    one, grid = tmp_path / "one.png", tmp_path / "grid.png"
    text = "a red circle at the top left, a green square on the right"
    assert cli_main("generate", run / "model", "--text", text, "--out", one, "--seed", "1").returncode == 0
    assert Image.open(one).size == (32, 32)
    again = tmp_path / "again.png"
    cli_main("generate", run / "model", "--text", text, "--out", again, "--seed", "1")
    assert Image.open(one).tobytes() == Image.open(again).tobytes()  # the same seed draws the same image
    done = cli_main("generate", run / "model", "--text", text, "--text", "a blue triangle", "--n", "3", "--out", grid)
    assert done.returncode == 0 and Image.open(grid).width > 3 * 32
    guided = cli_main("generate", run / "model", "--text", text, "--out", again, "--seed", "1", "--guidance", "3")
    assert guided.returncode == 0, guided.stderr[-2000:]
    palette = {tuple(c) for c in (load_generator(run / "model").model.vqvae.palette * 255).round().int().tolist()}
    assert set(Image.open(again).getdata()) <= palette  # painted in the palette fitted to the training scenes
    ranked = cli_main("generate", run / "model", "--text", text, "--out", again, "--candidates", "3",
                      "--ranker", trained_retrieval.model_dir)
    assert ranked.returncode == 0 and Image.open(again).size == (32, 32), ranked.stderr[-2000:]
    judged = cli_main("eval", run / "model", "--out", tmp_path / "ranked.json", "--set", "generation.candidates=2",
                      "--set", f"generation.ranker={trained_retrieval.model_dir}",
                      "--set", f"generation.retrieval_model={trained_retrieval.model_dir}")
    assert judged.returncode == 0 and "best of 2" in judged.stdout, judged.stderr[-2000:]
    ranked_metrics = json.loads((tmp_path / "ranked.json").read_text())
    assert ranked_metrics["candidates"] == 2 and 0 <= ranked_metrics["retrieval"]["generated_r1"] <= 1
    assert ranked_metrics["retrieval"]["judge_is_ranker"] and "not an independent test" in judged.stdout
    bad = cli_main("generate", run / "model", "--text", " ", "--out", one)
    assert bad.returncode != 0 and "error:" in bad.stderr and "--text" in bad.stderr
