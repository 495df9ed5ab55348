"""Task retrieval end to end: heads, caption pairs, a tiny run through the CLI, two-stage re-ranking, bad configs.

The tiny run trains on the 14 training images of the shared tiny shapes data and is tested on the
same split (its own test split has one image, too few for Recall@10): this checks the plumbing,
not how well retrieval generalises.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vlfuse.types import Features, FusionOutput
from helpers import read_json, assert_one_line_error
from helpers import write_yaml
from conftest import REPO, SHARED_DATA, retrieval_config

RETRIEVAL_CONFIG = REPO / "configs" / "retrieval_shapes.yaml"
COCO_MINI = SHARED_DATA / "coco-mini"


# --------------------------------------------------------------------------- heads

def test_dual_encoder_head_gives_unit_embeddings_in_a_shared_space():
    from vlfuse.heads.retrieval import DualEncoderHead

    torch.manual_seed(0)
    head = DualEncoderHead(dim=16, embed_dim=8, temperature=0.05)
    image = Features(torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.bool), torch.randn(3, 16))
    text = Features(torch.randn(4, 7, 16), torch.ones(4, 7, dtype=torch.bool), torch.randn(4, 16))
    image_emb, text_emb = head(image, text)
    assert image_emb.shape == (3, 8) and text_emb.shape == (4, 8)
    for emb in (image_emb, text_emb):
        assert torch.allclose(emb.norm(dim=-1), torch.ones(len(emb)), atol=1e-6)
    assert float(head.scale) == pytest.approx(20.0)
    # The temperature is a parameter of the model (saved with it) and learns from the loss.
    loss = head.loss(image_emb[:3], text_emb[:3])
    loss.backward()
    assert head.contrastive.log_scale.grad is not None and head.image_proj.weight.grad is not None
    assert "contrastive.log_scale" in dict(head.named_parameters())
    fixed = DualEncoderHead(dim=16, embed_dim=8, learnable_temperature=False)
    assert "contrastive.log_scale" not in dict(fixed.named_parameters())
    assert "contrastive.log_scale" in fixed.state_dict()


def test_dual_encoder_head_attention_pool_and_mlp_give_unit_embeddings_that_train():
    from vlfuse.heads.retrieval import DualEncoderHead

    torch.manual_seed(0)
    head = DualEncoderHead(dim=16, embed_dim=8, image_pool="attention", pool_queries=2, image_hidden=32)
    image = Features(torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.bool), torch.randn(3, 16))
    text = Features(torch.randn(3, 7, 16), torch.ones(3, 7, dtype=torch.bool), torch.randn(3, 16))
    image_emb, text_emb = head(image, text)
    assert image_emb.shape == (3, 8) and text_emb.shape == (3, 8)
    assert torch.allclose(image_emb.norm(dim=-1), torch.ones(3), atol=1e-6)
    head.loss(image_emb, text_emb).backward()
    for name in ("image_pool.queries", "image_pool.attention.q_proj.weight", "image_mlp.0.weight", "image_proj.weight"):
        grad = dict(head.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # The pool reads the tokens, not only the mean: changing one token changes the embedding.
    changed = image.tokens.clone()
    changed[0, 2] += 1.0
    moved = head.embed_image(Features(changed, image.mask, image.pooled))
    assert not torch.allclose(moved[0], image_emb[0]) and torch.allclose(moved[1:], image_emb[1:])


def test_dual_encoder_head_attention_pool_ignores_padding_tokens():
    from vlfuse.heads.retrieval import DualEncoderHead

    torch.manual_seed(0)
    head = DualEncoderHead(dim=16, embed_dim=8, image_pool="attention")
    tokens, pooled = torch.randn(2, 4, 16), torch.randn(2, 16)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    padded = tokens.clone()
    padded[0, 3] = 100.0  # a padding token's value must not matter
    a = head.embed_image(Features(tokens, mask, pooled))
    b = head.embed_image(Features(padded, mask, pooled))
    c = head.embed_image(Features(tokens[:1, :3], mask[:1, :3], pooled[:1]))
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a[:1], c, atol=1e-6)


def test_dual_encoder_head_defaults_keep_the_saved_layout_and_bad_options_are_named():
    from vlfuse.heads.retrieval import DualEncoderHead

    keys = set(DualEncoderHead(dim=16, embed_dim=8).state_dict())
    assert keys == {"image_proj.weight", "image_proj.bias", "text_proj.weight", "text_proj.bias",
                    "contrastive.log_scale"}
    with pytest.raises(ValueError, match="image_pool"):
        DualEncoderHead(dim=16, image_pool="max")
    with pytest.raises(ValueError, match="image_hidden"):
        DualEncoderHead(dim=16, image_hidden=-1)


def test_itm_head_gives_two_logits_from_a_fusion_output():
    from vlfuse.heads.retrieval import ITMHead, match_score

    head = ITMHead(dim=16)
    logits = head(FusionOutput(torch.randn(5, 16)))
    assert logits.shape == (5, 2)
    assert torch.allclose(match_score(logits), logits[:, 1] - logits[:, 0])
    assert ITMHead(dim=16, hidden=8)(FusionOutput(torch.randn(2, 16))).shape == (2, 2)


# --------------------------------------------------------------------------- data

COLOURS = {"red": (255, 0, 0), "green": (0, 200, 0), "blue": (0, 0, 255), "black": (0, 0, 0)}


def _coloured_samples(tmp_path: Path):
    """Images of one solid colour each, captioned by colour (blue has three captions, black none)."""
    from PIL import Image

    from vlfuse.data.records import CaptionSample

    captions = {"red": ("a red square",), "green": ("green", "all green"),
                "blue": ("blue one", "a blue square", "just blue"), "black": ()}
    samples = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        path = tmp_path / f"{name}.png"
        Image.new("RGB", (8, 8), rgb).save(path)
        samples.append(CaptionSample(i, path, captions[name]))
    return samples


def _colour_of(image: torch.Tensor) -> str:
    rgb = tuple(int(v) for v in image[:, 0, 0])
    return next(name for name, value in COLOURS.items() if value == rgb)


def test_caption_dataset_pairs_each_caption_with_its_image(tmp_path):
    from vlfuse.data.caption_dataset import CaptionDataset, PairSampler, collate_pairs
    from vlfuse.data.formats.common import SkipLog
    from vlfuse.data.tokenizer import build_tokenizer

    samples = _coloured_samples(tmp_path)
    tokenizer = build_tokenizer(c for s in samples for c in s.captions)
    dataset = CaptionDataset(samples, tokenizer, 8, 16, SkipLog("error"), progress=False)
    assert len(dataset) == 3 and dataset.uncaptioned == 1  # black has no caption: nothing to retrieve it by
    assert len(dataset.captions) == 6 and dataset.text_to_image.tolist() == [0, 1, 1, 2, 2, 2]
    for t, caption in enumerate(dataset.captions):  # the flat view, used by evaluation
        assert _colour_of(dataset.images[dataset.text_to_image[t]]) in caption
    vocab = {i: w for w, i in tokenizer.get_vocab().items()}
    seen = {name: set() for name in ("red", "green", "blue")}
    for epoch in range(3):
        for i in range(len(dataset)):
            image, ids = dataset[(i, epoch)]
            words = " ".join(vocab[t] for t in ids)
            assert _colour_of(image) in words
            seen[_colour_of(image)].add(words)
    assert [len(seen[c]) for c in ("red", "green", "blue")] == [1, 2, 3]  # every caption comes round

    # A batch: one caption per image, rows aligned, each image once; the sampler hands over the epoch.
    sampler = PairSampler(len(dataset), seed=0, shuffle=True)
    sampler.set_epoch(4)
    keys = list(sampler)
    assert sorted(i for i, _ in keys) == [0, 1, 2] and {e for _, e in keys} == {4}
    batch = collate_pairs([dataset[key] for key in keys])
    assert batch["images"].shape == (3, 3, 8, 8) and batch["images"].dtype == torch.uint8
    for image, ids, mask in zip(batch["images"], batch["input_ids"], batch["attention_mask"]):
        assert _colour_of(image) in " ".join(vocab[int(t)] for t in ids[mask])


def test_mirroring_flips_a_share_of_epochs_but_never_an_image_whose_caption_names_a_side(tmp_path):
    import numpy as np
    from PIL import Image

    from vlfuse.data.caption_dataset import CaptionDataset
    from vlfuse.data.formats.common import SkipLog
    from vlfuse.data.records import CaptionSample
    from vlfuse.data.tokenizer import build_tokenizer

    rng = np.random.default_rng(0)
    samples = []
    for i, captions in enumerate([("a dog runs",), ("a dog on the left", "a dog runs"), ("a cat sits",)]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
        samples.append(CaptionSample(i, path, captions))
    tokenizer = build_tokenizer(c for s in samples for c in s.captions)
    dataset = CaptionDataset(samples, tokenizer, 8, 16, SkipLog("error"), progress=False)

    def flips(i: int, epochs: range) -> list[bool]:
        out = []
        for epoch in epochs:
            image = dataset[(i, epoch)][0]
            assert torch.equal(image, dataset.images[i]) or torch.equal(image, dataset.images[i].flip(-1))
            out.append(not torch.equal(image, dataset.images[i]))
        return out

    assert not any(flips(0, range(20)))  # off until mirror() is called
    dataset.mirror(1.0)
    assert all(flips(0, range(4)))
    assert flips(1, range(4)) == [True, False, True, False]  # image 1 brings its "left" caption in odd epochs
    dataset.mirror(0.5)
    half = flips(2, range(200))
    assert 70 < sum(half) < 130 and half == flips(2, range(200))  # about half, the same each time
    assert torch.equal(dataset[2][0], dataset.images[2])  # evaluation's plain index: never flipped

    # A loader of stored flipped items (the feature cache's mirrored features) is used as it is.
    dataset.mirror(1.0, lambda path: torch.full((4,), float(Path(path).stem)))
    assert dataset[(2, 0)][0].tolist() == [2.0] * 4


def test_coco_captions_format_reads_the_generated_captions(shapes_root):
    from vlfuse.config import load_config
    from vlfuse.data.loading import read_split
    from vlfuse.data.records import CaptionSample

    config = load_config(RETRIEVAL_CONFIG, [f"data.root={shapes_root}"])
    read = read_split(config.data, "train")
    assert len(read.samples) == 14 and all(isinstance(s, CaptionSample) for s in read.samples)
    doc = read_json(shapes_root / "captions" / "captions_train.json")
    by_id = {a["image_id"]: a["caption"] for a in doc["annotations"]}
    for sample in read.samples:
        assert sample.captions == (by_id[sample.image_id],)
        assert sample.image_path == shapes_root / "images" / "train" / f"train_{sample.image_id:06d}.png"


def test_data_inspect_summarises_a_caption_split(shapes_root, cli_main, tmp_path):
    config = write_yaml(tmp_path / "data.yaml", retrieval_config(shapes_root, tmp_path / "unused"))
    result = cli_main("data", "inspect", config)
    assert result.returncode == 0, result.stderr
    assert "coco_captions / train: 14 images, 14 captions, 0 without a caption" in result.stdout
    assert "problems: none" in result.stdout


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason="../shared/data/coco-mini is not here (the CI data folder)")
def test_shipped_coco_mini_config_reads_real_coco_captions():
    from vlfuse.config import load_config
    from vlfuse.data.loading import read_split

    config = load_config(REPO / "configs" / "retrieval_coco_mini.yaml", [f"data.root={COCO_MINI}"])
    train, test = read_split(config.data, "train"), read_split(config.data, "test")
    assert (len(train.samples), len(test.samples)) == (80, 159) and not train.skipped.count
    assert all(len(s.captions) >= 5 and s.image_path.is_file() for s in train.samples + test.samples)


FLICKR8K = SHARED_DATA / "flickr8k"


@pytest.mark.skipif(not FLICKR8K.is_dir(), reason="../shared/data/flickr8k is not here (the CI data folder)")
def test_shipped_flickr8k_config_reads_its_train_and_val_splits():
    from vlfuse.config import load_config
    from vlfuse.data.loading import read_split

    config = load_config(REPO / "configs" / "retrieval_flickr8k.yaml", [f"data.root={FLICKR8K}"])
    train, val = read_split(config.data, "train"), read_split(config.data, "val")
    assert (len(train.samples), len(val.samples)) == (5997, 1000) and not train.skipped.count
    assert sum(len(s.captions) for s in val.samples) == 5000
    assert read_split(config.data, "test").samples == []  # the file holds no test split: nothing read
    assert config.model.text_encoder["tune_layers"] == 3 and config.data.feature_cache == "cache/features"
    assert config.retrieval.querybank >= 5997  # the whole training split is the query bank


# --------------------------------------------------------------------------- re-ranking

def test_reranking_with_a_perfect_matcher_fixes_the_order():
    from vlfuse.metrics.retrieval import retrieval_metrics
    from vlfuse.tasks.retrieval.evaluate import rerank_top_k

    owner = torch.tensor([0, 0, 1, 1, 2, 2])  # two captions per image
    # A first stage that prefers the wrong items: every image likes the captions of image (i + 1) % 3.
    similarity = torch.tensor([[0.1, 0.2, 0.9, 0.8, 0.3, 0.4],
                               [0.3, 0.4, 0.1, 0.2, 0.9, 0.8],
                               [0.9, 0.8, 0.3, 0.4, 0.1, 0.2]])
    assert retrieval_metrics(similarity, owner, (1,))["i2t_r1"] == 0.0
    calls = []

    def perfect(image_index, text_index):
        calls.append(len(image_index))
        return torch.where(owner[text_index] == image_index, 10.0, -10.0)

    i2t, t2i = rerank_top_k(similarity, 6, perfect)
    fixed = {**{k: v for k, v in retrieval_metrics(i2t, owner, (1, 2)).items() if k.startswith("i2t")},
             **{k: v for k, v in retrieval_metrics(t2i, owner, (1, 2)).items() if k.startswith("t2i")}}
    assert fixed["i2t_r1"] == fixed["t2i_r1"] == 1.0 and fixed["i2t_mean_rank"] == fixed["t2i_mean_rank"] == 1.0
    assert calls == [18]  # every pair once, although each is a candidate in both directions
    # ITC + ITM: among the re-ranked, the first stage still orders two matches.
    assert i2t[0, 2] == pytest.approx(0.9 - 10) and i2t[0, 0] == pytest.approx(0.1 + 10)

    # With k = 2 only the top two of each query are re-scored: image 0's own captions (first-stage
    # ranks 5 and 6) stay out of reach, and below the candidates the first-stage order holds.
    i2t, t2i = rerank_top_k(similarity, 2, perfect)
    order = i2t[0].argsort(descending=True).tolist()
    assert order[:2] == [2, 3] and order[2:] == [5, 4, 1, 0]
    # Text 0's top two images (2, then 1) are both wrong: re-scored, they keep their order, and its
    # own image 0 stays below them.
    assert t2i[:, 0].argsort(descending=True).tolist() == [2, 1, 0]


# --------------------------------------------------------------------------- a tiny run end to end

@pytest.fixture(scope="module")
def retrieval_run(shapes_root, tmp_path_factory):
    """`vlfuse train` (in this process) of the tiny retrieval config: returns (out_dir, CLI stdout)."""
    import sys

    from vlfuse.cli import main

    root = tmp_path_factory.mktemp("retrieval")
    config = write_yaml(root / "tiny.yaml", retrieval_config(shapes_root, root / "run"))
    argv = sys.argv
    sys.argv = ["vlfuse", "train", str(config)]
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, exc.code
    finally:
        sys.argv = argv
    return root / "run", config


def test_training_writes_a_model_dir_and_recall_both_ways(retrieval_run, capsys):
    out, _ = retrieval_run
    assert sorted(p.name for p in (out / "model").iterdir()) == ["config.yaml", "model.safetensors", "tokenizer.json",
                                                             "tokenizer.sha256"]
    run = read_json(out / "run.json")
    assert run["task"] == "retrieval" and run["steps"] == 2 * 4 and run["interrupted"] is False
    assert run["train"]["images"] == run["train"]["captions"] == 14
    metrics = read_json(out / "eval.json")
    assert metrics["images"] == metrics["captions"] == 14 and metrics["ks"] == [1, 5, 10]
    assert metrics["rerank_k"] == 16
    for stage in ("first_stage", "reranked"):
        for direction in ("i2t", "t2i"):
            for key in ("r1", "r5", "r10", "median_rank", "mean_rank"):
                assert f"{direction}_{key}" in metrics[stage], (stage, direction, key)
            recalls = [metrics[stage][f"{direction}_r{k}"] for k in (1, 5, 10)]
            assert recalls == sorted(recalls) and all(0 <= r <= 1 for r in recalls)
    rankings = [json.loads(line) for line in (out / "eval_rankings.jsonl").read_text().splitlines()]
    assert len(rankings) == 14 and all(1 <= r["rank_reranked"] <= 14 for r in rankings)
    t2i_r1 = sum(r["rank_reranked"] == 1 for r in rankings) / 14
    assert t2i_r1 == pytest.approx(metrics["reranked"]["t2i_r1"])
    with (out / "logs" / "metrics.csv").open() as f:
        header = f.readline()
    assert "train_itc" in header and "train_itm" in header and "train_hinge" in header


def test_eval_reloads_the_model_with_identical_embeddings(retrieval_run, cli_main, tmp_path):
    from vlfuse.data.caption_dataset import CaptionDataset
    from vlfuse.data.formats.common import SkipLog
    from vlfuse.data.loading import read_split
    from vlfuse.models.saved import load_model_dir
    from vlfuse.tasks.retrieval.evaluate import embed_dataset

    out, _ = retrieval_run
    result = cli_main("eval", out / "model", "--out", tmp_path / "again.json")
    assert result.returncode == 0, result.stderr
    assert "R@10" in result.stdout and "re-ranked" in result.stdout and "text→image" in result.stdout
    first, again = read_json(out / "eval.json"), read_json(tmp_path / "again.json")
    first.pop("seconds"), again.pop("seconds")
    assert again == first  # the scores of the trained model, rebuilt from the directory

    a, b = load_model_dir(out / "model"), load_model_dir(out / "model")
    read = read_split(a.config.data, "test")
    data = CaptionDataset(read.samples, a.tokenizer, 32, 64, SkipLog(), progress=False)
    ea, eb = embed_dataset(a.model, data, progress=False), embed_dataset(b.model, data, progress=False)
    assert torch.equal(ea.images, eb.images) and torch.equal(ea.texts, eb.texts)
    assert float(a.model.head.scale) == pytest.approx(first["logit_scale"])


def test_flip_average_embeds_each_photo_with_its_mirror_everywhere_photos_are_ranked(retrieval_run, cli_main,
                                                                                     tmp_path):
    import torch.nn.functional as F

    from vlfuse.index.encoder import RetrievalEncoder
    from vlfuse.models.saved import load_model_dir

    out, _ = retrieval_run
    model = load_model_dir(out / "model").model.eval()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        plain, mirror = model.embed_images(images), model.embed_images(images.flip(-1))
        model.flip_average = True
        averaged = model.embed_images(images)
        assert torch.allclose(averaged, F.normalize(plain + mirror, dim=-1), atol=1e-6)
        assert torch.allclose(averaged.norm(dim=-1), torch.ones(3)) and not torch.allclose(averaged, plain)
        # handed the features the caller already has (the matching head's), the same embedding
        assert torch.allclose(model.embed_images(images, encoded=model.encode_images(images)), averaged, atol=1e-6)
        symmetric = torch.cat([images[..., :16], images[..., :16].flip(-1)], -1)  # its own mirror: unchanged
        model.flip_average = False
        expected = model.embed_images(symmetric)
        model.flip_average = True
        assert torch.allclose(model.embed_images(symmetric), expected, atol=1e-6)
        with pytest.raises(ValueError, match="mirrored"):
            model.embed_images(None, torch.zeros(1, 3, 32, 32))  # cached features need their mirror's

    # `vlfuse eval --set retrieval.flip_average=true` ranks with it; the index embeds photos the same way.
    result = cli_main("eval", out / "model", "--set", "retrieval.flip_average=true", "--out", tmp_path / "f.json")
    assert result.returncode == 0, result.stderr
    flipped, first = read_json(tmp_path / "f.json"), read_json(out / "eval.json")
    assert flipped["first_stage"] != first["first_stage"]
    encoder = RetrievalEncoder.load(out / "model")
    assert torch.allclose(torch.from_numpy(encoder.embed_image_tensors(images)), plain, atol=1e-6)
    encoder.model.flip_average = True
    assert torch.allclose(torch.from_numpy(encoder.embed_image_tensors(images)), averaged, atol=1e-6)


def test_dual_encoder_without_fusion_reports_the_first_stage_only(shapes_root, tmp_path):
    from vlfuse.tasks import train

    result = train(retrieval_config(shapes_root, tmp_path / "run", "model.fusion=null", "train.epochs=1"),
                   progress=False)
    metrics = result.test_metrics
    assert metrics["reranked"] is None and metrics["rerank_k"] == 0 and "i2t_r10" in metrics["first_stage"]


def test_a_retrieval_model_answers_no_questions(retrieval_run, shapes_root, cli_main):
    out, _ = retrieval_run
    image = shapes_root / "images" / "test" / "test_000001.png"
    assert_one_line_error(cli_main("predict", out / "model", "--image", image, "--question", "What?"),
                          "retrieval model", str(out / "model"))


# --------------------------------------------------------------------------- bad configs

@pytest.mark.parametrize("case", ["retrieval with a VQA format", "vqa with a caption format",
                                  "retrieval with the VQA head", "retrieval with batches of one"])
def test_bad_retrieval_config_is_a_one_line_error(case, shapes_root, cli_main, tmp_path):
    from vlfuse.config import load_config

    if case == "vqa with a caption format":
        config = retrieval_config(shapes_root, tmp_path / "run", "task=vqa")
        culprits = ("data.format", "coco_captions", "task vqa")
    elif case == "retrieval with a VQA format":
        config = load_config(REPO / "configs" / "vqa_shapes.yaml", [f"data.root={shapes_root}", "task=retrieval",
                                                                     f"out_dir={tmp_path / 'run'}"])
        culprits = ("data.format", "vqa_v2", "task retrieval", "coco_captions")
    elif case == "retrieval with the VQA head":
        config = retrieval_config(shapes_root, tmp_path / "run", "model.head={name: classifier}")
        culprits = ("model.head.name", "dual_encoder", "classifier")
    else:
        config = retrieval_config(shapes_root, tmp_path / "run", "train.batch_images=1")
        culprits = ("train.batch_images", "negatives")
    assert_one_line_error(cli_main("train", write_yaml(tmp_path / "bad.yaml", config)), *culprits)
    assert not (tmp_path / "run" / "model" / "model.safetensors").exists()


def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(shapes_root, tmp_path, monkeypatch):
    """Mid-epoch crash, then --resume: same pairs, same hard negatives, same weights (in this process)."""
    from safetensors.torch import load_file

    from vlfuse.errors import ConfigError
    from vlfuse.tasks.retrieval import module as retrieval
    from vlfuse.tasks import train

    extra = ("train.checkpoint_every_n_steps=1",)
    reference = train(retrieval_config(shapes_root, tmp_path / "reference", *extra), progress=False)

    step = retrieval.RetrievalModule.training_step

    def crash_at_step_5(self, batch, batch_idx):
        if self.global_step == 5:  # epoch 1, second batch: the resumed run must start mid-epoch
            raise RuntimeError("simulated crash")
        return step(self, batch, batch_idx)

    config = retrieval_config(shapes_root, tmp_path / "run", *extra)
    monkeypatch.setattr(retrieval.RetrievalModule, "training_step", crash_at_step_5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, progress=False)
    monkeypatch.setattr(retrieval.RetrievalModule, "training_step", step)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    with pytest.raises(ConfigError, match="--resume"):
        train(config, progress=False)
    resumed = train(config, resume=True, progress=False)
    assert read_json(tmp_path / "run" / "run.json")["steps"] == read_json(tmp_path / "reference" / "run.json")["steps"]
    ours, theirs = (load_file(str(r.model_dir / "model.safetensors")) for r in (resumed, reference))
    assert list(ours) == list(theirs)
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-6, rtol=0) for k in theirs)
    assert resumed.test_metrics["first_stage"] == reference.test_metrics["first_stage"]


def test_eval_split_test_reads_the_test_images_of_a_karpathy_file(shapes_root, tmp_path, cli_main):
    """Flickr8k's recipe trains on train and val; a Karpathy file that also has a test split is
    evaluated with `vlfuse eval MODEL --split test`, no config edit needed (one file holds every split)."""
    coco = read_json(shapes_root / "captions" / "captions_train.json")
    captions: dict[int, list[str]] = {}
    for annotation in coco["annotations"]:
        captions.setdefault(annotation["image_id"], []).append(annotation["caption"])
    split_of = ["train"] * 10 + ["val"] * 2 + ["test"] * 2
    entries = [{"filename": image["file_name"], "split": split,
                "sentences": [{"raw": c, "tokens": c.split()} for c in captions[image["id"]]]}
               for image, split in zip(coco["images"], split_of)]
    (tmp_path / "dataset_tiny.json").write_text(json.dumps({"dataset": "tiny", "images": entries}))
    files = f"{{path: dataset_tiny.json, images: {shapes_root / 'images' / 'train'}}}"
    config = retrieval_config(shapes_root, tmp_path / "run", "data.format=karpathy", f"data.root={tmp_path}",
                              f"data.train={files}", f"data.val={files}", "data.test=null", "train.epochs=1")
    result = cli_main("train", write_yaml(tmp_path / "c.yaml", config))
    assert result.returncode == 0, result.stderr
    assert read_json(tmp_path / "run" / "eval.json")["split"] == "val"  # no test split configured: val
    result = cli_main("eval", tmp_path / "run" / "model", "--split", "test")
    assert result.returncode == 0, result.stderr
    metrics = read_json(tmp_path / "run" / "eval_test.json")
    assert metrics["split"] == "test" and metrics["images"] == 2 and metrics["captions"] == len(
        captions[coco["images"][12]["id"]]) + len(captions[coco["images"][13]["id"]])
    ranked = {Path(line["image"]).name for line in map(json.loads, (tmp_path / "run" / "eval_test_rankings.jsonl")
                                                     .read_text().splitlines())}
    assert ranked == {coco["images"][12]["file_name"], coco["images"][13]["file_name"]}


# --------------------------------------------------------------------------- query-bank normalisation

def test_querybank_normalisation_is_the_inverted_softmax_and_discounts_a_hub():
    from vlfuse.metrics.retrieval import retrieval_metrics
    from vlfuse.tasks.retrieval.querybank import normalised_scores

    unit = torch.nn.functional.normalize
    texts = torch.eye(4)[:3]  # caption t belongs to image t
    # Image 2 is a hub: it leans towards every caption, and wins text 0's and text 1's query.
    images = unit(torch.tensor([[1.0, 0, 0, 1.2], [0, 1.0, 0, 1.2], [0.8, 0.8, 0.5, 0]]), dim=-1)
    owner = torch.tensor([0, 1, 2])
    raw = images @ texts.T
    assert (raw.argmax(0) == torch.tensor([2, 2, 2])).all()
    # Training captions (the bank for image candidates) are often close to the hub, as real queries are.
    bank = {"images": torch.eye(4)[:3], "texts": unit(torch.tensor([[1.0, 1.0, 0, 0], [1.0, 0, 0, 0],
                                                                     [0, 1.0, 0, 0]]), dim=-1)}
    i2t, t2i = normalised_scores(images, texts, bank, beta=10.0)
    # By hand: score(q, c) = beta cos(q, c) - log sum_b exp(beta cos(b, c)), the bank's b being training
    # captions for image candidates and training images for caption candidates.
    for i in range(3):
        for t in range(3):
            by_images = torch.logsumexp(10 * bank["images"] @ texts[t], 0)
            by_texts = torch.logsumexp(10 * bank["texts"] @ images[i], 0)
            assert i2t[i, t] == pytest.approx(float(10 * raw[i, t] - by_images), abs=1e-4)
            assert t2i[i, t] == pytest.approx(float(10 * raw[i, t] - by_texts), abs=1e-4)
    assert retrieval_metrics(t2i, owner, (1,))["t2i_r1"] == 1.0  # the hub no longer wins the others' queries


def test_reranking_reads_each_direction_from_its_own_first_stage():
    from vlfuse.tasks.retrieval.evaluate import rerank_top_k

    i2t_first = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    t2i_first = torch.tensor([[0.1, 0.9], [0.8, 0.2]])  # the text->image side prefers the other images

    def nothing(image_index, text_index):
        return torch.zeros(len(image_index))

    i2t, t2i = rerank_top_k(i2t_first, 1, nothing, 1.0, t2i_first)
    assert i2t.argmax(1).tolist() == [0, 1] and t2i.argmax(0).tolist() == [1, 0]


def test_training_with_a_querybank_keeps_it_with_the_model_and_eval_uses_it(shapes_root, tmp_path, cli_main):
    from vlfuse.tasks.retrieval.querybank import BANK_FILE, load_querybank

    config = retrieval_config(shapes_root, tmp_path / "run", "retrieval.querybank=10", "train.epochs=1")
    result = cli_main("train", write_yaml(tmp_path / "c.yaml", config))
    assert result.returncode == 0, result.stderr
    model = tmp_path / "run" / "model"
    bank = load_querybank(model)
    assert bank["images"].shape[0] == 10 and bank["texts"].shape[0] == 10  # one caption an image in this data
    torch.testing.assert_close(bank["texts"].norm(dim=-1), torch.ones(10))
    metrics = read_json(tmp_path / "run" / "eval.json")
    assert metrics["querybank"]["images"] == 10 and metrics["querybank"]["beta"] == 10.0
    assert set(metrics["querybank_sweep"]) == {"5.0", "8.0", "10.0", "12.0", "15.0", "20.0"}
    assert metrics["querybank_sweep"]["10.0"]["t2i_r1"] == metrics["querybank"]["t2i_r1"]
    printed = [line for line in result.stdout.splitlines() if "query bank" in line]
    assert [line.split("│")[2].strip() for line in printed] == ["image→text", "text→image"]  # the stage is printed
    result = cli_main("eval", model, "--set", "retrieval.querybank=0")  # switched off at evaluation
    assert result.returncode == 0, result.stderr
    assert "query bank" not in result.stdout
    assert read_json(tmp_path / "run" / "eval_test.json")["querybank"] is None
    (model / BANK_FILE).unlink()
    result = cli_main("eval", model)
    assert result.returncode == 0 and "has no query bank" in result.stderr, result.stderr


def test_caption_edits_add_each_captions_edits_as_negatives_of_its_image(shapes_root, tmp_path):
    """retrieval.caption_edits: the loss gains the edited-caption term, and it is the softmax of each image
    over its caption and that caption's edits (tests/losses: its hand-worked value)."""
    from vlfuse.tasks.retrieval.module import prepare_retrieval

    config = retrieval_config(shapes_root, tmp_path / "run", "retrieval.caption_edits=2")
    prepared = prepare_retrieval(config, tmp_path / "run" / "model", resume=False, progress=False)
    module, data = prepared.module, prepared.datamodule
    batch = data.collate([data.train_set[i] for i in range(4)])
    out = module.losses(batch)
    terms = out["itc"] + out["edits"] + config.retrieval.hinge_weight * out["hinge"] + out["itm"]
    torch.testing.assert_close(out["loss"], terms)
    assert out["edits"] > 0
    module.edits = None  # the same batch without the term
    assert "edits" not in module.losses(batch)


def test_caption_edits_refuse_a_text_side_served_from_the_cache(shapes_root, tmp_path, cli_main, tiny_bert_words):
    config = retrieval_config(shapes_root, tmp_path / "run", "retrieval.caption_edits=2",
                              f"model.text_encoder={{name: pretrained, freeze: true, path: {tiny_bert_words}}}",
                              f"data.feature_cache={tmp_path / 'cache'}")
    assert_one_line_error(cli_main("train", write_yaml(tmp_path / "bad.yaml", config)),
                          "retrieval.caption_edits", "data.cache_text")
