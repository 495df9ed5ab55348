"""The retrieval index: build from a folder or a config, save -> load -> same results, add, search by
text and by image, ITM re-ranking, the model fingerprint check, and ANN kinds against exact search.

The model is the tiny retrieval run shared through conftest (`trained_retrieval`): it checks the
plumbing, not how well the model retrieves.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss", reason="the index needs faiss-cpu (pip install 'vlfuse[serve]')")

from vlfuse.errors import ConfigError, DataError  # noqa: E402
from vlfuse.index import (IndexSettings, ModelMismatchError, RetrievalEncoder, add_to_index, build_index,  # noqa: E402
                          open_index)
from vlfuse.index import vectors as fv  # noqa: E402
from vlfuse.index.store import Item  # noqa: E402
from helpers import assert_one_line_error


@pytest.fixture(scope="module")
def encoder(trained_retrieval) -> RetrievalEncoder:
    return RetrievalEncoder.load(trained_retrieval.model_dir)


@pytest.fixture(scope="module")
def train_images(shapes_root) -> Path:
    return shapes_root / "images" / "train"


# --------------------------------------------------------------------------- build, save, load

def test_build_save_load_gives_the_same_results(encoder, train_images, tmp_path):
    index = build_index(encoder, images=train_images, out=tmp_path / "idx")
    files = sorted(p.name for p in (tmp_path / "idx").iterdir())
    assert files == ["index.json", "items.jsonl", "vectors.faiss"]
    assert len(index) == 14 and index.dim == 8
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["kind"] == "flat" and meta["count"] == 14 and meta["model_fingerprint"] == encoder.fingerprint
    assert {item.id for item in index.items} == {p.name for p in train_images.iterdir()}
    assert all(Path(item.path).is_absolute() and Path(item.path).is_file() for item in index.items)

    queries = ["a red circle on the left", "a blue square"]
    before = index.search_texts(queries, k=5)
    again = open_index(tmp_path / "idx", encoder)
    after = again.search_texts(queries, k=5)
    assert [[(h.position, h.id, h.path) for h in row] for row in before] == \
        [[(h.position, h.id, h.path) for h in row] for row in after]
    assert np.allclose([[h.score for h in row] for row in before], [[h.score for h in row] for row in after])
    for row in after:  # best first, and the scores are the model's own cosines
        scores = [h.score for h in row]
        assert [h.rank for h in row] == [1, 2, 3, 4, 5] and scores == sorted(scores, reverse=True)
    text = encoder.embed_texts(queries[:1])[0]
    hit = after[0][0]
    assert hit.score == pytest.approx(float(encoder.embed_images([hit.path])[0] @ text), abs=1e-5)


def test_image_query_finds_the_image_itself_first(encoder, train_images):
    index = build_index(encoder, images=train_images)
    query = sorted(train_images.iterdir())[3]
    hits = index.search_images([query], k=3)[0]
    assert hits[0].path == str(query.resolve()) and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert len(hits) == 3
    assert len(index.search_images([query.read_bytes()], k=100)[0]) == 14  # k beyond the index: all of it


def test_build_from_a_dataset_config_indexes_each_image_once_with_its_dataset_id(trained_retrieval, encoder):
    config = trained_retrieval.model_dir / "config.yaml"
    index = build_index(encoder, data=config, split="train")  # that config's train split: 14 captioned images
    assert len(index) == 14 and all(isinstance(item.id, int) for item in index.items)
    assert len({item.path for item in index.items}) == 14
    with pytest.raises(ConfigError, match="exactly one"):
        build_index(encoder, images=Path("."), data=config)


def test_add_skips_images_already_indexed_and_bad_files(encoder, shapes_root, tmp_path):
    folder = tmp_path / "more"
    shutil.copytree(shapes_root / "images" / "train", folder / "train")
    build_index(encoder, images=folder, out=tmp_path / "idx")
    shutil.copytree(shapes_root / "images" / "test", folder / "test")
    (folder / "test" / "broken.png").write_bytes(b"not a png")
    index, added = add_to_index(tmp_path / "idx", encoder, images=folder)
    assert added == 1 and len(index) == 15  # the one test image; the 14 known ones and the broken file left out
    assert index.skipped.count == 1 and "broken.png" in index.skipped.summary()
    assert len(open_index(tmp_path / "idx", encoder)) == 15


def test_the_same_image_id_twice_is_refused_and_nothing_is_added(encoder, shapes_root, tmp_path, cli_main):
    """A hit names its image by id: two images under one id (the same file name in two folders added
    one after the other) are refused before any is embedded, by the API and the CLI alike."""
    build_index(encoder, images=shapes_root / "images" / "train", out=tmp_path / "idx")
    index = open_index(tmp_path / "idx", encoder)
    taken = index.items[0]
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(taken.path, other / str(taken.id))  # same name, another folder: the same id
    (other / "new.png").write_bytes(Path(taken.path).read_bytes())
    with pytest.raises(DataError, match=re.escape(f"image id {taken.id!r} is given twice, for {taken.path} and ")):
        add_to_index(tmp_path / "idx", encoder, images=other)
    assert len(open_index(tmp_path / "idx", encoder)) == 14  # the index on disk is untouched
    with pytest.raises(DataError, match="image id 'x' is given twice"):
        index.add_images([("x", other / "new.png"), ("x", other / str(taken.id))])
    with pytest.raises(DataError, match="given twice"):
        index.add_vectors(np.zeros((1, index.dim), np.float32), [Item(taken.id, "/somewhere/else.png")])
    assert len(index) == 14 and index.index.ntotal == 14
    assert_one_line_error(cli_main("index", "add", tmp_path / "idx", encoder.model_dir, "--images", other),
                          f"image id {taken.id!r} is given twice")


def test_a_folder_without_readable_images_is_a_clear_error(encoder, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="no readable images"):
        build_index(encoder, images=tmp_path)
    with pytest.raises(DataError, match="not a vlfuse index directory"):
        open_index(tmp_path, encoder)


# --------------------------------------------------------------------------- re-ranking

def test_rerank_scores_are_the_evaluations_in_the_similaritys_units_best_first(encoder, train_images):
    index = build_index(encoder, images=train_images)
    text = "a red circle on the left"
    plain = index.search_texts([text], k=6)[0]
    reranked = index.search_texts([text], k=6, rerank=True)[0]
    assert {h.position for h in plain} == {h.position for h in reranked}  # the same candidates, re-ordered
    images = np.stack([encoder.image_tensor(h.path).numpy() for h in reranked])
    import torch

    similarity, itm = encoder.match(torch.from_numpy(images), text)
    # evaluation's score, scale x cos + rerank_weight x ITM log-odds, divided by the scale
    weight = encoder.config.retrieval.rerank_weight
    want = (encoder.logit_scale * similarity + weight * itm) / encoder.logit_scale
    assert np.allclose([h.score for h in reranked], want, atol=1e-5)
    assert [h.score for h in reranked] == sorted((h.score for h in reranked), reverse=True)
    assert all(h.match is not None for h in reranked) and [h.rank for h in reranked] == list(range(1, 7))

    encoder_without = RetrievalEncoder.load(encoder.model_dir)
    encoder_without.model.fusion = encoder_without.model.itm_head = None
    with pytest.raises(ConfigError, match="cannot re-rank"):
        build_index(encoder_without, images=train_images).search_texts([text], rerank=True)


# --------------------------------------------------------------------------- the fingerprint

def test_another_model_is_refused_with_a_clear_message(trained_retrieval, encoder, train_images, tmp_path):
    from safetensors.torch import load_file, save_file

    build_index(encoder, images=train_images, out=tmp_path / "idx")
    other = Path(shutil.copytree(trained_retrieval.model_dir, tmp_path / "other"))
    weights = load_file(other / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 0.01  # the same architecture, other weights
    save_file(weights, other / "model.safetensors")
    with pytest.raises(ModelMismatchError, match="built by another model") as caught:
        open_index(tmp_path / "idx", other)
    assert str(other.resolve()) in str(caught.value) and "vlfuse index build" in str(caught.value)

    same_weights = Path(shutil.copytree(trained_retrieval.model_dir, tmp_path / "config_changed"))
    config = same_weights / "config.yaml"
    config.write_text(config.read_text().replace("rerank_k: 16", "rerank_k: 8"))
    with pytest.raises(ModelMismatchError):
        open_index(tmp_path / "idx", same_weights)
    assert len(open_index(tmp_path / "idx", Path(shutil.copytree(trained_retrieval.model_dir, tmp_path / "copy")))) \
        == 14  # a copy of the same model is the same model


def test_cli_build_search_add_and_refusal(cli_main, trained_retrieval, shapes_root, tmp_path):
    model, images = trained_retrieval.model_dir, shapes_root / "images" / "train"
    out = cli_main("index", "build", model, "--images", images, "--out", tmp_path / "idx", "--kind", "hnsw")
    assert out.returncode == 0 and "14 images" in out.stdout and "hnsw" in out.stdout, out.stderr
    found = cli_main("index", "search", tmp_path / "idx", model, "--text", "a red circle", "--k", "3", "--json")
    hits = json.loads(found.stdout)
    assert found.returncode == 0 and [h["rank"] for h in hits] == [1, 2, 3]
    query = sorted(images.iterdir())[0]
    found = cli_main("index", "search", tmp_path / "idx", model, "--image", query, "--k", "2")
    assert found.returncode == 0 and found.stdout.splitlines()[0].split()[2] == query.name
    reranked = cli_main("index", "search", tmp_path / "idx", model, "--text", "a red circle", "--rerank")
    assert reranked.returncode == 0 and "match" in reranked.stdout
    added = cli_main("index", "add", tmp_path / "idx", model, "--images", shapes_root / "images" / "val")
    assert added.returncode == 0 and "Added 1: 15 images" in added.stdout, added.stdout

    assert_one_line_error(cli_main("index", "search", tmp_path / "idx", model), "--text or --image")
    assert_one_line_error(cli_main("index", "search", tmp_path / "idx", model, "--image", query, "--rerank"),
                          "--rerank")
    assert_one_line_error(cli_main("index", "build", model, "--images", images, "--out", tmp_path / "x", "--kind",
                                   "annoy"), "flat, ivf, hnsw")
    vqa_dir = tmp_path / "not_retrieval"
    shutil.copytree(model, vqa_dir)
    (vqa_dir / "config.yaml").write_text((vqa_dir / "config.yaml").read_text().replace("task: retrieval",
                                                                                       "task: vqa"))
    assert_one_line_error(cli_main("index", "search", tmp_path / "idx", vqa_dir, "--text", "x"), "not a retrieval")


# --------------------------------------------------------------------------- approximate against exact

def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors around `clusters` centres: embeddings have such structure, uniform noise does not."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def test_hnsw_and_ivf_agree_with_exact_search():
    data, queries = clustered(3000, 32, 30, 0), clustered(100, 32, 30, 1)
    exact = fv.create(IndexSettings("flat"), 32, data)
    exact.add(data)
    _, truth = fv.search(exact, queries, 10)
    assert np.allclose(np.sort(-(queries @ data.T), 1)[:, :10], -fv.search(exact, queries, 10)[0], atol=1e-5)

    hnsw = fv.create(IndexSettings("hnsw", ef_search=64), 32, data)
    hnsw.add(data)
    assert recall_at(fv.search(hnsw, queries, 10)[1], truth) >= 0.95

    ivf_all = fv.create(IndexSettings("ivf", nlist=16, nprobe=16), 32, data)  # every cell visited: exact
    ivf_all.add(data)
    assert recall_at(fv.search(ivf_all, queries, 10)[1], truth) == 1.0
    settings = IndexSettings("ivf")
    ivf = fv.create(settings, 32, data)
    assert settings.nlist == 76 and settings.nprobe == 9  # ~4 sqrt(n) cells, sqrt(nlist) of them searched
    ivf.add(data)
    assert recall_at(fv.search(ivf, queries, 10)[1], truth) >= 0.8


def test_every_kind_ranks_the_tiny_index_like_exact_search(encoder, train_images, tmp_path):
    results = {}
    for kind in ("flat", "ivf", "hnsw"):
        build_index(encoder, images=train_images, kind=kind, out=tmp_path / kind)
        index = open_index(tmp_path / kind, encoder)  # search settings come back from disk
        assert index.settings.kind == kind
        results[kind] = [h.position for h in index.search_texts(["a green triangle"], k=10)[0]]
    assert results["ivf"] == results["flat"] and results["hnsw"] == results["flat"]


# --------------------------------------------------------------------------- the query bank

def test_a_model_with_a_query_bank_ranks_text_queries_as_its_evaluation_does(trained_retrieval, train_images,
                                                                             tmp_path):
    """Text -> image with the bank is exact in inner-product form ([c, -bias] against [q, 1]); image queries
    stay cosine; the biases and beta survive save -> load; adding needs the bank."""
    import torch
    import torch.nn.functional as F

    from vlfuse.tasks.retrieval.querybank import BANK_FILE, normalised_scores, save_querybank

    model_dir = tmp_path / "model"
    shutil.copytree(trained_retrieval.model_dir, model_dir)
    config = model_dir / "config.yaml"
    config.write_text(re.sub(r"querybank: 0\b", "querybank: 16", config.read_text()))
    dim = RetrievalEncoder.load(trained_retrieval.model_dir).dim
    rng = torch.Generator().manual_seed(0)
    save_querybank(model_dir, *(F.normalize(torch.randn(16, dim, generator=rng), dim=-1) for _ in range(2)))
    encoder = RetrievalEncoder.load(model_dir)
    index = build_index(encoder, images=train_images, kind="flat")
    assert index.dim == dim + 1 and index.querybank_beta == 10.0

    texts = ["a red circle", "a blue square", "a green triangle"]
    stored = index.index.reconstruct_n(0, len(index))
    images, queries = torch.from_numpy(stored[:, :-1]), torch.from_numpy(encoder.embed_texts(texts))
    _, t2i = normalised_scores(images, queries, encoder.querybank, 10.0)
    cosine = (images @ queries.T).numpy()
    hits = index.search_texts(texts, k=len(index))
    for j, row in enumerate(hits):
        expected = t2i[:, j].numpy() / 10.0
        assert [h.position for h in row] == np.argsort(-expected, kind="stable").tolist()
        np.testing.assert_allclose([h.score for h in row], expected[[h.position for h in row]], atol=1e-5)
        np.testing.assert_allclose([h.similarity for h in row], cosine[[h.position for h in row], j], atol=1e-5)
    assert any([h.position for h in row] != np.argsort(-cosine[:, j]).tolist() for j, row in enumerate(hits))

    reranked = index.search_texts(texts[:1], k=4, rerank=True)[0]  # evaluation's weighting, divided by beta
    images = torch.stack([encoder.image_tensor(h.path) for h in reranked])
    similarity, itm = encoder.match(images, texts[0])
    bias = np.array([index.items[h.position].bias for h in reranked])
    weight = encoder.config.retrieval.text_query_weight
    np.testing.assert_allclose([h.score for h in reranked], (10.0 * (similarity - bias) + weight * itm) / 10.0,
                               atol=1e-5)

    image_hits = index.search_images([next(train_images.iterdir())], k=3)[0]
    assert image_hits[0].score == pytest.approx(1.0, abs=1e-4) == image_hits[0].similarity  # cosine to itself

    loaded = open_index(index.save(tmp_path / "index"), model_dir)
    assert loaded.querybank_beta == 10.0 and [i.bias for i in loaded.items] == [i.bias for i in index.items]
    assert [[h.as_dict() for h in row] for row in loaded.search_texts(texts, k=5)] == \
        [[h.as_dict() for h in row[:5]] for row in hits]

    (model_dir / BANK_FILE).unlink()
    with pytest.raises(ConfigError, match="query bank"):
        open_index(tmp_path / "index", RetrievalEncoder.load(model_dir)).add_images(
            [("new", next((train_images.parent / "val").iterdir()))])
