"""Re-ranking by tokens (retrieval.reranker: tokens): ColBERT's MaxSim from the query's side, through the
embedding head's own projections, and re-ranking with it in evaluation, the index, the server and export."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlfuse.types import Features
from helpers import assert_one_line_error, make_client, read_json, upload
from conftest import REPO, retrieval_config


def test_max_sim_averages_each_query_tokens_best_cosine_hand_worked():
    from vlfuse.heads.retrieval import max_sim

    e1, e2, e3 = torch.eye(3)
    image = torch.stack([e1, e2])[None]  # two image tokens
    text = torch.stack([e1, (e1 + e2) / math.sqrt(2), e3])[None]  # three words
    all_cells, all_words = torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool)
    image_query, text_query = max_sim(image, all_cells, text, all_words)
    # cells' best words: e1 -> 1, e2 -> 1/sqrt2; words' best cells: 1, 1/sqrt2, 0 (e3 is in no cell)
    assert float(image_query) == pytest.approx((1 + 2 ** -0.5) / 2, abs=1e-6)
    assert float(text_query) == pytest.approx((1 + 2 ** -0.5) / 3, abs=1e-6)
    # the third word as padding: not averaged, and no cell's best
    image_query, text_query = max_sim(image, all_cells, text, torch.tensor([[True, True, False]]))
    assert float(image_query) == pytest.approx((1 + 2 ** -0.5) / 2, abs=1e-6)
    assert float(text_query) == pytest.approx((1 + 2 ** -0.5) / 2, abs=1e-6)


def test_max_sim_ignores_whatever_the_padding_holds():
    from vlfuse.heads.retrieval import max_sim

    torch.manual_seed(0)
    image, text = F.normalize(torch.randn(3, 5, 8), dim=-1), F.normalize(torch.randn(3, 6, 8), dim=-1)
    cells = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    words = torch.tensor([[1] * 6, [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    scores = max_sim(image, cells, text, words)
    noisy = max_sim(torch.where(cells[..., None], image, torch.randn_like(image) * 10), cells,
                    torch.where(words[..., None], text, torch.randn_like(text) * 10), words)
    for got, want in zip(noisy, scores):
        assert torch.allclose(got, want, atol=1e-6) and bool((want.abs() <= 1 + 1e-6).all())
    alone = max_sim(image[1:2, :3], cells[1:2, :3], text[1:2, :2], words[1:2, :2])  # cut to its real tokens
    assert [float(s) for s in alone] == pytest.approx([float(s[1]) for s in scores], abs=1e-6)


def test_head_token_scores_embed_tokens_with_the_pooled_vectors_projections():
    from vlfuse.heads.retrieval import DualEncoderHead, max_sim

    torch.manual_seed(0)
    head = DualEncoderHead(dim=6, embed_dim=4)
    image = Features(torch.randn(2, 3, 6), torch.ones(2, 3, dtype=torch.bool), torch.randn(2, 6))
    text = Features(torch.randn(2, 5, 6), torch.tensor([[1, 1, 1, 0, 0], [1] * 5], dtype=torch.bool), torch.randn(2, 6))
    want = max_sim(F.normalize(head.image_proj(image.tokens), dim=-1), image.mask,
                   F.normalize(head.text_proj(text.tokens), dim=-1), text.mask)
    for got, expected in zip(head.token_scores(image, text), want):
        assert torch.allclose(got, expected)
    # a photo of one cell and a caption of one word: MaxSim is the cosine of their embeddings
    one_cell = Features(image.tokens[:, :1], image.mask[:, :1], image.tokens[:, 0])
    one_word = Features(text.tokens[:, :1], text.mask[:, :1], text.tokens[:, 0])
    cosine = (head.embed_image(one_cell) * head.embed_text(one_word)).sum(-1)
    for got in head.token_scores(one_cell, one_word):
        assert torch.allclose(got, cosine, atol=1e-6)


def test_rerank_top_k_reads_each_directions_own_score_and_weight():
    from vlfuse.tasks.retrieval.evaluate import rerank_top_k

    similarity = torch.tensor([[0.9, 0.8], [0.7, 0.6]])  # image 0 is first for both texts and has text 0 first

    def score(image_index, text_index):  # as an image query's candidate: text 1 wins; as a text query's: image 1
        return (text_index.float() * 10, image_index.float() * 10)

    i2t, t2i = rerank_top_k(similarity, 2, score, 1.0)
    assert i2t.argmax(1).tolist() == [1, 1] and t2i.argmax(0).tolist() == [1, 1]
    i2t, t2i = rerank_top_k(similarity, 2, score, 1.0, t2i_weight=0.0)  # text queries keep the first stage
    assert i2t.argmax(1).tolist() == [1, 1] and t2i.argmax(0).tolist() == [0, 0]


@pytest.fixture(scope="module")
def tokens_run(shapes_root, tmp_path_factory):
    """A tiny run with no matching head (model.fusion: null), re-ranking by tokens."""
    from vlfuse.tasks import train

    out = tmp_path_factory.mktemp("tokens") / "run"
    train(retrieval_config(shapes_root, out, "model.fusion=null", "retrieval.reranker=tokens", "retrieval.rerank_k=4",
                           "retrieval.t2i_rerank_weight=0.5"), progress=False)
    return out


def test_a_model_without_a_matching_head_reranks_by_tokens(tokens_run):
    metrics = read_json(tokens_run / "eval.json")
    assert metrics["reranker"] == "tokens" and metrics["rerank_k"] == 4 and metrics["reranked"] is not None
    assert (metrics["rerank_weight"], metrics["t2i_rerank_weight"]) == (1.0, 0.5)
    assert metrics["rerank_sweep"]["0.0"] == {k: v for k, v in metrics["first_stage"].items()
                                              if k in ("i2t_r1", "t2i_r1", "r_mean")}


def test_any_model_is_evaluated_with_the_token_reranker_by_a_set(trained_retrieval, cli_main, tmp_path):
    itm = read_json(trained_retrieval.out_dir / "eval.json")
    result = cli_main("eval", trained_retrieval.model_dir, "--split", "train", "--set", "retrieval.reranker=tokens",
                      "--out", tmp_path / "tokens.json")
    assert result.returncode == 0, result.stderr
    tokens = read_json(tmp_path / "tokens.json")
    assert itm["reranker"] == "itm" and tokens["reranker"] == "tokens"
    assert tokens["first_stage"] == itm["first_stage"] and tokens["rerank_sweep"] != itm["rerank_sweep"]


def test_rerank_scores_are_the_token_scores_on_the_itc_scale_or_the_itm_log_odds_both_ways(tokens_run,
                                                                                          trained_retrieval):
    from vlfuse.heads.retrieval import match_score
    from vlfuse.models.saved import load_model_dir

    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    ids = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0], [2, 8, 9, 3]])
    mask = ids != 0
    with torch.no_grad():
        model = load_model_dir(tokens_run / "model").model.eval()
        assert model.reranker == "tokens" and model.can_rerank and model.itm_head is None
        image, text = model.encode_images(images), model.encode_texts(ids, mask)
        for got, want in zip(model.rerank_scores(image, text), model.head.token_scores(image, text)):
            assert torch.allclose(got, want * model.head.scale)
        model = load_model_dir(trained_retrieval.model_dir).model.eval()
        image, text = model.encode_images(images), model.encode_texts(ids, mask)
        image_query, text_query = model.rerank_scores(image, text)
        assert torch.equal(image_query, text_query)
        assert torch.allclose(image_query, match_score(model.match(image, text)))


def test_the_index_and_server_rerank_text_queries_by_the_token_score(tokens_run, shapes_root):
    from vlfuse.index import build_index
    from vlfuse.index.encoder import RetrievalEncoder

    encoder = RetrievalEncoder.load(tokens_run / "model")
    assert encoder.can_rerank
    index = build_index(encoder, images=shapes_root / "images" / "train")
    hits = index.search_texts(["a red circle"], k=4, rerank=True)[0]
    images = torch.stack([encoder.image_tensor(h.path) for h in hits])
    similarity, scores = encoder.match(images, "a red circle")
    weight = 0.5 / encoder.logit_scale  # the text queries' weight (t2i_rerank_weight), in cosine units
    assert [h.score for h in hits] == pytest.approx((similarity + weight * scores).tolist(), abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    picture = next((shapes_root / "images" / "train").iterdir()).read_bytes()
    with make_client([tokens_run / "model"]) as client:
        body = client.post("/match", files=upload(picture), data={"text": "a red circle"}).json()
    assert body["rerank_score"] is not None and body["match_log_odds"] is None and body["match_probability"] is None


@pytest.mark.parametrize("override, key", [("retrieval.reranker=cross", "retrieval.reranker"),
                                           ("retrieval.t2i_rerank_weight=-1", "retrieval.t2i_rerank_weight")])
def test_bad_reranker_settings_are_one_line_errors(override, key, shapes_root, tmp_path, cli_main):
    result = cli_main("train", REPO / "configs" / "retrieval_shapes.yaml", "--set", f"data.root={shapes_root}",
                      "--set", f"out_dir={tmp_path / 'run'}", "--set", override)
    assert_one_line_error(result, key)
    assert not (tmp_path / "run" / "model" / "model.safetensors").exists()


@pytest.mark.slow
def test_a_token_reranker_exports_to_a_match_graph_that_scores_as_pytorch_does(tokens_run, shapes_root, tmp_path):
    import numpy as np

    from vlfuse.export import export_model
    from vlfuse.predict import load_encoder

    info = export_model(tokens_run / "model", tmp_path / "onnx")
    assert set(info["graphs"]) == {"image.onnx", "text.onnx", "match.onnx"}
    torch_encoder, onnx_encoder = (load_encoder(d) for d in (tokens_run / "model", info["out_dir"]))
    files = sorted((shapes_root / "images" / "train").iterdir())[:5]
    images = torch.stack([torch_encoder.image_tensor(f) for f in files])
    for got, want in zip(onnx_encoder.match(images, "a blue square"), torch_encoder.match(images, "a blue square")):
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert onnx_encoder.logit_scale == pytest.approx(torch_encoder.logit_scale)
