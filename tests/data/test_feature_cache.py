"""Feature cache of frozen image encoders: hits are identical, a changed encoder or image misses,
interrupted builds resume, corrupt chunks are named, training reads features instead of images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vlfuse.data.feature_cache import (INDEX, FeatureCache, cache_info, check_cacheable, ensure_features,
                                       read_index)
from vlfuse.encoders.hf_text import PretrainedTextEncoder
from vlfuse.errors import ConfigError, DataError
from helpers import TinyFrozenEncoder


def make_images(folder: Path, count: int, size: int = 32, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def as_batch(paths: list[Path], size: int = 32) -> torch.Tensor:
    from vlfuse.data.images import image_to_tensor, load_image

    return torch.stack([image_to_tensor(load_image(p), size) for p in paths]).float() / 255


def build(root: Path, encoder: nn.Module, paths: list[Path], **kwargs):
    cache = FeatureCache.for_encoder(root, encoder, 32)
    return cache, ensure_features(cache, encoder, paths, 32, progress=False, **kwargs)


def test_a_cache_hit_gives_the_features_the_encoder_computes(tmp_path):
    encoder = TinyFrozenEncoder()
    paths = make_images(tmp_path / "images", 5)
    _, first = build(tmp_path / "cache", encoder, paths)
    assert first.computed == 5 and first.features.shape == (5, 6, 4, 4)
    _, again = build(tmp_path / "cache", TinyFrozenEncoder(), paths)  # a new run: same weights, read from disk
    assert again.computed == 0
    assert torch.equal(again.features, first.features)
    with torch.no_grad():
        direct = encoder(as_batch(paths))
        cached = encoder.from_frozen(torch.stack([again.loader(p) for p in paths]))
    for name in ("tokens", "mask", "pooled", "boxes"):
        assert torch.equal(getattr(cached, name), getattr(direct, name)), name


def test_mirrored_features_are_the_flipped_images_and_keyed_apart(tmp_path):
    encoder = TinyFrozenEncoder()
    paths = make_images(tmp_path / "images", 3)
    cache, plain = build(tmp_path / "cache", encoder, paths)
    _, mirrored = build(tmp_path / "cache", encoder, paths, mirrored=True)
    assert mirrored.computed == 3 and len(cache) == 3  # not served the plain features
    with torch.no_grad():
        assert torch.equal(mirrored.features, encoder.frozen_features(as_batch(paths).flip(-1)))
    assert not torch.equal(mirrored.features, plain.features)
    _, again = build(tmp_path / "cache", TinyFrozenEncoder(), paths, mirrored=True)
    assert again.computed == 0 and torch.equal(again.features, mirrored.features)
    assert cache_info(tmp_path / "cache")[0]["images"] == 6


def test_the_same_bytes_under_another_name_hit_and_an_edited_image_misses(tmp_path):
    encoder = TinyFrozenEncoder()
    paths = make_images(tmp_path / "images", 3)
    build(tmp_path / "cache", encoder, paths)
    copy = tmp_path / "copy.png"
    copy.write_bytes(paths[0].read_bytes())
    make_images(tmp_path / "other", 1, seed=9)[0].replace(paths[1])  # paths[1] now holds another picture
    _, cached = build(tmp_path / "cache", encoder, paths + [copy])
    assert cached.computed == 1  # only the edited one
    assert torch.equal(cached.loader(copy), cached.loader(paths[0]))


def test_a_changed_encoder_or_image_size_is_another_cache(tmp_path):
    paths = make_images(tmp_path / "images", 3)
    cache_a, first = build(tmp_path / "cache", TinyFrozenEncoder(seed=0), paths)
    cache_b, other = build(tmp_path / "cache", TinyFrozenEncoder(seed=1), paths)  # other weights
    assert other.computed == 3 and cache_b.folder != cache_a.folder
    assert not torch.equal(other.features, first.features)
    nudged = TinyFrozenEncoder(seed=0)
    with torch.no_grad():
        nudged.backbone.bias[0] += 1e-6
    assert build(tmp_path / "cache", nudged, paths)[1].computed == 3
    resized = FeatureCache.for_encoder(tmp_path / "cache", TinyFrozenEncoder(seed=0), 48)
    assert resized.folder not in (cache_a.folder, cache_b.folder)
    assert len(cache_info(tmp_path / "cache")) == 4


def test_an_interrupted_build_resumes_with_the_missing_images_only(tmp_path, monkeypatch):
    encoder = TinyFrozenEncoder()
    paths = make_images(tmp_path / "images", 7)
    real_add, chunks_written = FeatureCache.add, []

    def add_then_die(self, keys, features):
        if len(chunks_written) == 2:
            raise KeyboardInterrupt  # killed while computing the third chunk
        chunks_written.append(real_add(self, keys, features))

    monkeypatch.setattr(FeatureCache, "add", add_then_die)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path / "cache", encoder, paths, chunk_size=2)
    monkeypatch.setattr(FeatureCache, "add", real_add)
    cache = FeatureCache.for_encoder(tmp_path / "cache", encoder, 32)
    assert len(cache) == 4
    with (cache.folder / INDEX).open("a") as f:  # and killed again while appending an index line
        f.write('{"file": "chunk-x.safetensors", "sha2')
    _, resumed = build(tmp_path / "cache", encoder, paths, chunk_size=2)
    assert resumed.computed == 3
    with torch.no_grad():
        assert torch.allclose(resumed.features, encoder.frozen_features(as_batch(paths)), atol=1e-6)
    assert len(read_index(cache.folder)) == 4 and not list(cache.folder.glob("*.tmp"))


def test_a_corrupt_chunk_is_named_and_rebuilt_by_a_repairing_build(tmp_path):
    encoder = TinyFrozenEncoder()
    paths = make_images(tmp_path / "images", 4)
    cache, _ = build(tmp_path / "cache", encoder, paths, chunk_size=2)
    chunk = cache.folder / read_index(cache.folder)[1].file
    data = bytearray(chunk.read_bytes())
    data[-5] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt") as error:
        build(tmp_path / "cache", encoder, paths)
    assert chunk.name in str(error.value)
    assert cache_info(tmp_path / "cache", verify=True)[0]["corrupt"] == [chunk.name]
    _, repaired = build(tmp_path / "cache", encoder, paths, repair=True)
    assert repaired.computed == 2
    assert cache_info(tmp_path / "cache", verify=True)[0]["corrupt"] == []


def test_unreadable_images_are_reported_not_cached(tmp_path):
    paths = make_images(tmp_path / "images", 2)
    bad = tmp_path / "images" / "bad.png"
    bad.write_bytes(b"not a png")
    _, cached = build(tmp_path / "cache", TinyFrozenEncoder(), paths + [bad, tmp_path / "missing.png"])
    assert cached.computed == 2 and set(cached.errors) == {bad, tmp_path / "missing.png"}
    with pytest.raises(DataError, match="bad.png"):
        cached.loader(bad)


def test_trainable_or_uncacheable_encoders_are_refused_with_the_key_to_change():
    with pytest.raises(ConfigError, match="freeze: true"):
        check_cacheable(TinyFrozenEncoder(freeze=False))
    with pytest.raises(ConfigError, match="efficientnet"):
        check_cacheable(nn.Conv2d(3, 3, 1))


def test_efficientnet_split_gives_its_forward(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    from vlfuse.encoders.pretrained import EfficientNetImageEncoder

    encoder = EfficientNetImageEncoder(dim=8).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        whole = encoder(images)
        split = encoder.from_frozen(encoder.frozen_features(images))
    assert torch.equal(whole.tokens, split.tokens) and torch.equal(whole.boxes, split.boxes)
    assert encoder.frozen_fingerprint() == EfficientNetImageEncoder(dim=16).frozen_fingerprint()  # proj not in it
    with pytest.raises(ConfigError, match="trainable"):
        check_cacheable(EfficientNetImageEncoder(dim=8, freeze=False))


def test_training_reads_cached_features_and_never_runs_the_backbone(shapes_root, tiny_config, tmp_path,
                                                                   tiny_frozen_in_factory):
    from vlfuse.data.loading import read_split
    from vlfuse.tasks import train

    cache_dir = tmp_path / "features"
    config = tiny_config(shapes_root, tmp_path / "run", tiny_frozen_in_factory, f"data.feature_cache={cache_dir}",
                         "train.epochs=1", "train.checkpoint_every_n_steps=1000", "data.test=null")
    images = [s.image_path for split in ("train", "val") for s in read_split(config.data, split).samples]
    _, prebuilt = build(cache_dir, TinyFrozenEncoder(), images)  # what `vlfuse cache build` does
    assert prebuilt.computed == 15  # 14 train + 1 val images
    TinyFrozenEncoder.backbone_calls = 0
    result = train(config, progress=False)
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert not result.interrupted and (result.model_dir / "model.safetensors").is_file(), summary
    assert summary["steps"] == 4, summary
    # 4 training steps, the validation and the evaluation on val (no test split here), all from the cache
    assert TinyFrozenEncoder.backbone_calls == 0, (TinyFrozenEncoder.backbone_calls, cache_info(cache_dir))
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["overall"]["count"] == 4
    assert cache_info(cache_dir)[0]["images"] == 15, cache_info(cache_dir)


def test_training_refuses_a_cache_for_a_trainable_encoder(shapes_root, tiny_config, tmp_path, cli_main,
                                                          write_config):
    config = write_config(tmp_path / "c.yaml", shapes_root, tmp_path / "run", f"data.feature_cache={tmp_path / 'f'}")
    result = cli_main("train", config)
    assert result.returncode == 2 and "data.feature_cache" in result.stderr and "Traceback" not in result.stderr


def test_cache_cli_builds_then_reports(shapes_root, tmp_path, cli_main, write_config, tiny_frozen_in_factory):
    config = write_config(tmp_path / "c.yaml", shapes_root, tmp_path / "run", f"data.feature_cache={tmp_path / 'f'}")
    result = cli_main("cache", "build", config, "--set", tiny_frozen_in_factory)
    assert result.returncode == 0, result.stderr
    assert "16 images of train, val, test cached" in result.stdout and "16 computed now" in result.stdout
    result = cli_main("cache", "info", tmp_path / "f", "--verify")
    assert result.returncode == 0 and "TinyFrozenEncoder at 32 px, 16 images" in result.stdout
    assert "all chunks verified" in result.stdout


def test_the_cache_is_refused_where_it_would_be_ignored_or_stale(tmp_path):
    from types import SimpleNamespace

    from vlfuse.config import load_config
    from vlfuse.data.feature_cache import check_cache_current, check_cache_task, feature_loader

    with pytest.raises(ConfigError, match="only, not dialogue"):
        check_cache_task(load_config(None, ["task=dialogue", f"data.feature_cache={tmp_path}"]))
    config = load_config(None, [f"data.feature_cache={tmp_path / 'f'}", "data.image_size=32"])
    model = SimpleNamespace(image_encoder=TinyFrozenEncoder())
    feature_loader(config, model.image_encoder, [], progress=False)
    check_cache_current(config, model)  # unchanged: fine
    with torch.no_grad():  # as train.init loading other backbone weights would
        model.image_encoder.backbone.weight.mul_(2)
    with pytest.raises(ConfigError, match="stale"):
        check_cache_current(config, model)


# --------------------------------------------------------------------------- text: frozen text states

def tiny_text_encoder(folder, **kwargs):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return PretrainedTextEncoder(dim=8, path=str(folder), freeze=True, max_length=16, **kwargs)


CAPTION_IDS = [[2, 5, 7, 3], [2, 9, 3], [2, 5, 7, 3], [2, 11, 12, 13, 14, 3], [2, 4, 3]]  # one caption twice


def build_text(root: Path, encoder: nn.Module, ids=CAPTION_IDS, **kwargs):
    from vlfuse.data.feature_cache import ensure_text_features

    cache = FeatureCache.for_text_encoder(root, encoder)
    return cache, *ensure_text_features(cache, encoder, ids, progress=False, **kwargs)


def test_tuned_top_layers_split_the_text_encoder_and_only_they_train(tiny_bert_dir):
    ids, mask = torch.randint(1, 32, (2, 5)), torch.tensor([[1] * 5, [1] * 3 + [0] * 2]).bool()
    encoder = tiny_text_encoder(tiny_bert_dir, tune_layers=1)
    assert encoder.pretrained.encoder.layer[1].training  # as built: Lightning never calls train()
    whole = tiny_text_encoder(tiny_bert_dir).eval()
    with torch.no_grad():  # nothing trained yet: split or whole, tuned or not, the same model
        reference = whole(ids, mask)
        encoder.eval()
        split = encoder.from_frozen(encoder.frozen_features(ids, mask), mask)
    assert torch.allclose(split.tokens[mask], reference.tokens[mask], atol=1e-5)
    encoder.train()
    assert encoder.pretrained.encoder.layer[1].training and not encoder.pretrained.encoder.layer[0].training
    encoder(ids, mask).pooled.pow(2).sum().backward()
    trained = {n for n, p in encoder.named_parameters() if p.grad is not None}
    assert trained and all(n.startswith(("proj.", "pretrained.encoder.layer.1.")) for n in trained), trained
    assert any(n.startswith("pretrained.encoder.layer.1.") for n in trained)
    with pytest.raises(ConfigError, match="tune_layers' must be in 0..2"):
        tiny_text_encoder(tiny_bert_dir, tune_layers=3)
    with pytest.raises(ConfigError, match="freeze: true"):
        PretrainedTextEncoder(dim=8, path=str(tiny_bert_dir), freeze=False, tune_layers=1)


def test_cached_and_uncached_text_states_give_the_same_logits(tiny_bert_dir, tmp_path):
    from vlfuse.data.tokenizer import pad_ids
    from vlfuse.fusion.cross_attention import CrossAttentionFusion
    from vlfuse.heads.retrieval import DualEncoderHead, ITMHead
    from vlfuse.models.retrieval import RetrievalModel

    torch.manual_seed(0)
    model = RetrievalModel(TinyFrozenEncoder(), tiny_text_encoder(tiny_bert_dir, tune_layers=1),
                           DualEncoderHead(8, 8), CrossAttentionFusion(8, 1, 2), ITMHead(8)).eval()
    _, states, computed = build_text(tmp_path / "cache", model.text_encoder)
    assert computed == 4 and len(states) == 5  # the repeated caption is computed once
    assert [len(s) for s in states] == [len(i) for i in CAPTION_IDS]
    ids, mask = pad_ids(CAPTION_IDS)
    images = model.encode_images(torch.rand(5, 3, 32, 32))
    with torch.no_grad():
        outputs = []
        for text_states in (None, torch.nn.utils.rnn.pad_sequence(states, batch_first=True)):
            text = model.encode_texts(ids, mask, text_states)
            image_emb, text_emb = model.head(images, text)
            outputs.append((image_emb @ text_emb.T * model.head.scale, model.match(images, text)))
    (itc, itm), (cached_itc, cached_itm) = outputs
    assert torch.allclose(itc, cached_itc, atol=1e-5) and torch.allclose(itm, cached_itm, atol=1e-5)


def test_another_text_encoder_or_tokenizer_never_reads_an_old_cache(tiny_bert_dir, tmp_path):
    import shutil

    encoder = tiny_text_encoder(tiny_bert_dir, tune_layers=1)
    cache, _, _ = build_text(tmp_path / "cache", encoder)
    with torch.no_grad():  # the tuned top layer is not part of the cached states: same cache
        encoder.pretrained.encoder.layer[1].output.dense.weight.mul_(2)
    assert build_text(tmp_path / "cache", encoder)[0].folder == cache.folder
    with torch.no_grad():  # a frozen weight changed (as train.init would): another cache, all recomputed
        encoder.pretrained.embeddings.word_embeddings.weight.mul_(2)
    other, _, computed = build_text(tmp_path / "cache", encoder)
    assert other.folder != cache.folder and computed == 4
    below = tiny_text_encoder(tiny_bert_dir)  # the states of the last layer, not of the one below it
    assert build_text(tmp_path / "cache", below)[0].folder not in (cache.folder, other.folder)
    with_tokenizer = tmp_path / "bert"  # the same weights with another tokenizer file
    shutil.copytree(tiny_bert_dir, with_tokenizer)
    (with_tokenizer / "tokenizer.json").write_text('{"another": "tokenizer"}')
    retokenized = build_text(tmp_path / "cache", tiny_text_encoder(with_tokenizer, tune_layers=1))
    assert retokenized[0].folder != cache.folder and retokenized[2] == 4
    assert {e["kind"] for e in cache_info(tmp_path / "cache")} == {"text"}


def test_a_corrupt_text_chunk_is_named_and_rebuilt(tiny_bert_dir, tmp_path):
    encoder = tiny_text_encoder(tiny_bert_dir)
    cache, states, _ = build_text(tmp_path / "cache", encoder, chunk_size=2)
    states = [s.clone() for s in states]  # the chunks may be memory-mapped: keep what they held
    chunk = cache.folder / read_index(cache.folder)[0].file
    data = bytearray(chunk.read_bytes())
    data[-3] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt") as error:
        build_text(tmp_path / "cache", encoder)
    assert chunk.name in str(error.value)
    _, repaired, computed = build_text(tmp_path / "cache", encoder, repair=True)
    assert computed == 2 and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(states, repaired))
    assert cache_info(tmp_path / "cache", verify=True)[0]["corrupt"] == []


def test_retrieval_on_two_frozen_encoders_trains_from_both_caches(shapes_root, tmp_path, cli_main, write_config,
                                                                 tiny_frozen_in_factory, tiny_bert_words, monkeypatch):
    """`vlfuse cache build` fills both sides (and, data.hflip, the training photos flipped); training and
    evaluation then never run a frozen part, and evaluating from the caches gives the numbers of
    evaluating without them (retrieval.flip_average: from the mirrored photos' cached features, against
    flipping the pixels)."""
    bert = tiny_bert_words
    sets = [tiny_frozen_in_factory, "task=retrieval", "data.format=coco_captions",
            "data.train={annotations: captions/captions_train.json, images: images/train}",
            "data.val=null", "data.test={annotations: captions/captions_train.json, images: images/train}",
            f"data.feature_cache={tmp_path / 'f'}", "model.dim=16", "model.fusion={name: cross_attention, layers: 1}",
            f"model.text_encoder={{name: pretrained, freeze: true, tune_layers: 1, path: {bert}}}",
            "model.head={name: dual_encoder, embed_dim: 8}", "train.epochs=2", "train.batch_images=8",
            "data.hflip=0.5", "retrieval.flip_average=true"]
    config = write_config(tmp_path / "c.yaml", shapes_root, tmp_path / "run", *sets)
    result = cli_main("cache", "build", config)
    assert result.returncode == 0, result.stderr
    assert "28 captions cached (14 computed now" in result.stdout, result.stdout  # train and test: one file
    assert "states of width 16" in result.stdout
    # flip_average: the test images too (here the train file again: nothing more to compute)
    assert "14 images of train, test cached flipped left-right (14 computed now)" in result.stdout, result.stdout
    calls = []
    frozen_features = PretrainedTextEncoder.frozen_features
    monkeypatch.setattr(PretrainedTextEncoder, "frozen_features", lambda *a: calls.append(1) or frozen_features(*a))
    TinyFrozenEncoder.backbone_calls = 0
    result = cli_main("train", config)
    assert result.returncode == 0, result.stderr
    assert calls == [] and TinyFrozenEncoder.backbone_calls == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["frozen_text_states_cached"] is True
    cached = json.loads((tmp_path / "run" / "eval.json").read_text())
    result = cli_main("eval", tmp_path / "run" / "model", "--set", "data.feature_cache=null",
                      "--out", tmp_path / "plain.json")
    assert result.returncode == 0, result.stderr
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert calls and cached["split"] == plain["split"] == "test"
    for stage in ("first_stage", "reranked"):
        assert cached[stage] == pytest.approx(plain[stage], abs=1e-6), stage
