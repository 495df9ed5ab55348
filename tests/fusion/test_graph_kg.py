"""Graph fusion reading a user's knowledge graph joined to the scene graphs (vlfuse.data.knowledge_graph):
the fused graph's nodes and edges, padding, and train / eval / predict through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from vlfuse.config import load_config
from vlfuse.data.knowledge_graph import KG_LINK, join_knowledge_graph, make_knowledge_graph, relation_ids
from vlfuse.data.formats.fields import Where
from vlfuse.data.scene_graph import batch_scene_graphs, encode_scene_graphs, shapes_scene
from vlfuse.data.tokenizer import build_tokenizer

GRAPH_FUSION = "model.fusion={name: graph, layers: 1, heads: 2, spatial_k: 3, relations: 20, dropout: 0.0}"
TRIPLES = [("red", "has_weight", "heavy"), ("green", "has_weight", "light"), ("blue", "has_weight", "heavy"),
           ("circle", "made_of", "wood")]


def scene(*objects):
    return shapes_scene([{"color": c, "shape": s, "x": x, "y": 20, "radius": 5} for c, s, x in objects], 64,
                        Where(Path("scene")))


@pytest.fixture(scope="module")
def kg_model():
    """A tiny graph-fusion model, two scenes (1 and 3 objects) with and without the knowledge graph."""
    from vlfuse.models.factory import build_model

    small, large = scene(("red", "circle", 10)), scene(("green", "square", 10), ("blue", "triangle", 30),
                                                       ("red", "circle", 50))
    knowledge = make_knowledge_graph(TRIPLES)
    joined = {Path(k): join_knowledge_graph(g, knowledge) for k, g in (("small", small), ("large", large))}
    plain = {Path("small"): small, Path("large"): large}
    tokenizer = build_tokenizer(["is the red object heavy", "has weight made of",  # the fact nodes' words
                                 *[n for g in joined.values() for n in g.names]])
    config = load_config(None, [
        "data.image_size=32", "model.dim=16", GRAPH_FUSION,
        "model.image_encoder={name: cnn, channels: [8, 16], layers: 1, heads: 2, dropout: 0.0}",
        "model.text_encoder={name: transformer, layers: 1, heads: 2, dropout: 0.0}",
        "model.head={name: classifier, hidden: 16, dropout: 0.0}"])
    torch.manual_seed(0)
    model = build_model(config, tokenizer.get_vocab_size(), 5).eval()
    encoded = {"kg": encode_scene_graphs(joined, tokenizer, relation_ids=relation_ids(knowledge)),
               "plain": encode_scene_graphs(plain, tokenizer)}
    ids = torch.tensor([tokenizer.encode("is the red object heavy").ids] * 2)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, knowledge, encoded, images, ids, tokenizer


def fused_graph(model, graph, images, ids):
    from vlfuse.models.scene_graph_input import external_graph

    mask = ids != 0
    image, text = model.image_encoder(images), model.text_encoder(ids, mask)
    return external_graph(model.text_encoder, model.fusion, graph, image, text, ids, mask, None), ids.shape[1], \
        image.tokens.shape[1]


def edge_counts(external, ids: dict[str, int]) -> dict[str, list[int]]:
    real = external.edge_mask
    return {name: (real & (external.edges[..., 2] == i)).sum(1).tolist() for name, i in ids.items()}


def test_knowledge_graph_adds_nodes_and_edges(kg_model):
    model, knowledge, encoded, images, ids, _ = kg_model
    kinds = relation_ids(knowledge)
    counted = {n: kinds[n] for n in ("has_weight", "made_of", KG_LINK, "mentions", "depicts", "left_of")}
    with torch.no_grad():
        plain, nt, nv = fused_graph(model, batch_scene_graphs([encoded["plain"][Path("small")],
                                                                encoded["plain"][Path("large")]]), images, ids)
        joined, _, _ = fused_graph(model, batch_scene_graphs([encoded["kg"][Path("small")],
                                                               encoded["kg"][Path("large")]]), images, ids)
    # entities: small 1 -> 1 + {red, circle, heavy, wood}; large 3 -> 3 + {red, green, blue, circle, heavy, light, wood}
    assert plain.node_mask.sum(1).tolist() == [1, 3] and joined.node_mask.sum(1).tolist() == [5, 10]
    assert edge_counts(plain, counted) == {"has_weight": [0, 0], "made_of": [0, 0], KG_LINK: [0, 0],
                                           "mentions": [1, 1], "depicts": [1, 3], "left_of": [0, 3]}
    # "red" -> scene red circle and KG red; "heavy" -> KG heavy; knowledge entities depict no image token
    assert edge_counts(joined, counted) == {"has_weight": [1, 3], "made_of": [1, 1], KG_LINK: [2, 4],
                                            "mentions": [3, 3], "depicts": [1, 3], "left_of": [0, 3]}
    # every edge of a knowledge relation runs between knowledge entities (after the scene's own)
    first = nt + nv
    kg_edges = joined.edge_mask[1] & (joined.edges[1, :, 2] == kinds["has_weight"])
    assert joined.edges[1][kg_edges][:, :2].ge(first + 3).all()


def test_knowledge_graph_changes_the_answer_and_padding_does_not(kg_model):
    model, _, encoded, images, ids, _ = kg_model
    small, large = encoded["kg"][Path("small")], encoded["kg"][Path("large")]
    mask = ids != 0
    with torch.no_grad():
        without, _ = model(images, ids, mask, graph=batch_scene_graphs([encoded["plain"][Path("small")]] * 2))
        alone, _ = model(images[:1], ids[:1], mask[:1], graph=batch_scene_graphs([small]))
        beside, _ = model(images, ids, mask, graph=batch_scene_graphs([small, large]))  # padded to 10 entities
        padded_text = torch.cat([ids, torch.zeros(2, 3, dtype=ids.dtype)], 1)
        longer, _ = model(images, padded_text, padded_text != 0, graph=batch_scene_graphs([small, large]))
    assert not torch.allclose(without[0], alone[0], atol=1e-4)
    torch.testing.assert_close(beside[0], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(longer, beside, atol=1e-5, rtol=0)


def test_fact_nodes_are_reached_by_the_question_words_they_hold(kg_model):
    """data.knowledge_facts: "red has_weight heavy" said of the red circle is a node the words "red" and
    "heavy" mention directly, and another fact there gives another answer."""
    from vlfuse.data.scene_graph import RELATION_ID

    model, knowledge, _, images, ids, tokenizer = kg_model
    small = scene(("red", "circle", 10))
    light = make_knowledge_graph([("red", "has_weight", "light") if t[0] == "red" else t for t in TRIPLES])
    joined = {k: join_knowledge_graph(small, g, facts=True) for k, g in (("heavy", knowledge), ("light", light))}
    assert joined["heavy"].names[-2:] == ("red circle has weight heavy", "red circle made of wood")
    graphs = encode_scene_graphs({Path(k): g for k, g in joined.items()}, tokenizer,
                                 relation_ids=relation_ids(knowledge))
    batch = batch_scene_graphs([graphs[Path("heavy")], graphs[Path("light")]])
    with torch.no_grad():
        external, nt, nv = fused_graph(model, batch, images, ids)
        answers, _ = model(images, ids, ids != 0, graph=batch)
    mentions = external.edge_mask[0] & (external.edges[0, :, 2] == RELATION_ID["mentions"])
    mentioned = {(w, n - nt - nv) for w, n in external.edges[0][mentions][:, :2].tolist()}
    red, heavy = (ids[0].tolist().index(tokenizer.token_to_id(w)) for w in ("red", "heavy"))
    names = joined["heavy"].names
    assert {names[e] for w, e in mentioned if w == red} == {"red circle", "red", "red circle has weight heavy",
                                                             "red circle made of wood"}
    assert {names[e] for w, e in mentioned if w == heavy} == {"heavy", "red circle has weight heavy"}
    assert not torch.allclose(answers[0], answers[1], atol=1e-4)  # the facts differ, so do the answers


# --------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def kg_data(tmp_path_factory) -> Path:
    from bench.kg_example import main

    root = tmp_path_factory.mktemp("kg_shapes")
    main([str(root), "--images", "12", "--size", "32", "--graphs", "4"])
    (root / "kg_unknown.jsonl").write_text('{"head": "red", "relation": "colour_of", "tail": "x"}\n')
    return root


def kg_config(write_config, kg_data, path, *extra):
    splits = [f"data.{s}={{path: kg/{s}.jsonl, images: images/{s}}}" for s in ("train", "val", "test")]
    return write_config(path, kg_data, path.parent / "run", GRAPH_FUSION, "data.format=jsonl", *splits,
                        "data.scene_graphs=scenes/{split}_scenes.json", "train.epochs=1", *extra)


def test_cli_trains_evaluates_and_predicts_with_one_knowledge_graph(cli_main, kg_data, write_config, tmp_path):
    import vlfuse

    result = cli_main("train", kg_config(write_config, kg_data, tmp_path / "kg.yaml",
                                         "data.knowledge_graph=kg/graphs/train_000.jsonl"))
    assert result.returncode == 0, result.stdout + result.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["knowledge_graph"]["triples"] == 9 and run["knowledge_graph"]["relations"] == ["has_weight", "made_of"]
    assert run["knowledge_graph"]["entities_per_image"] > 6  # the colours, weights, shapes, materials of a scene
    assert run["knowledge_graph"]["facts_per_image"] == 0  # no fact nodes unless data.knowledge_facts
    model_dir = tmp_path / "run" / "model"
    saved = json.loads((model_dir / "knowledge_graph.json").read_text())
    first = json.loads((kg_data / "kg" / "graphs" / "train_000.jsonl").read_text().splitlines()[0])
    assert saved["relations"] == ["has_weight", "made_of"] and list(first.values()) in saved["triples"]

    graph = kg_data / "kg" / "graphs" / "train_000.jsonl"
    graph.rename(graph.with_suffix(".moved"))  # eval reads the model's copy, not the file
    try:
        again = cli_main("eval", model_dir, "--out", tmp_path / "again.json")
    finally:
        graph.with_suffix(".moved").rename(graph)
    assert again.returncode == 0, again.stderr
    assert (json.loads((tmp_path / "again.json").read_text())["overall"]
            == json.loads((tmp_path / "run" / "eval.json").read_text())["overall"])
    other = cli_main("eval", model_dir, "--set", "data.knowledge_graph=kg/graphs/test_000.jsonl")
    assert other.returncode == 0 and "evaluating with the knowledge graph" in other.stderr
    unknown = cli_main("eval", model_dir, "--set", "data.knowledge_graph=kg_unknown.jsonl")
    assert unknown.returncode != 0 and "relation 'colour_of' is not one the model was trained with" in unknown.stderr

    scenes = json.loads((kg_data / "scenes" / "test_scenes.json").read_text())
    first = scenes["scenes"][0]
    scene_file = tmp_path / "scene.json"
    scene_file.write_text(json.dumps({"size": scenes["size"], "objects": first["objects"]}))
    image, question = kg_data / "images" / "test" / first["file_name"], "Is the red object heavy?"
    predicted = cli_main("predict", model_dir, "--image", image, "--question", question, "--scene", scene_file)
    assert predicted.returncode == 0, predicted.stderr
    predictor = vlfuse.load(model_dir)
    assert predictor.saved.knowledge_graph.triples[0] == tuple(json.loads(graph.read_text().splitlines()[0]).values())
    assert predicted.stdout.splitlines()[0] == predictor.predict(image, question, scene=scene_file).answer


def test_cli_trains_evaluates_and_predicts_with_a_graph_per_sample(cli_main, kg_data, write_config, tmp_path):
    import vlfuse

    # as configs/kg_shapes.yaml: fact nodes too, so predict and eval below read them as training did
    result = cli_main("train", kg_config(write_config, kg_data, tmp_path / "kg.yaml", "data.knowledge_graph=per_sample",
                                         "data.knowledge_facts=true"))
    assert result.returncode == 0, result.stdout + result.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())["knowledge_graph"]
    named = {json.loads(line)["knowledge_graph"] for split in ("train", "val")
             for line in (kg_data / "kg" / f"{split}.jsonl").read_text().splitlines()}
    assert run["source"] == "per_sample" and run["graphs"] == len(named) > 1 and run["triples"] == 9
    assert run["relations"] == ["has_weight", "made_of"] and run["entities_per_image"] > 6
    assert run["facts_per_image"] >= 6  # with fact nodes: at least each object's weight (a colour each)
    model_dir = tmp_path / "run" / "model"
    assert json.loads((model_dir / "knowledge_graph.json").read_text()) == {
        "source": "per_sample", "relations": ["has_weight", "made_of"], "triples": []}
    scores = {}
    for name, extra in (("own", []), ("swapped", ["--set", "data.test.path=kg/test_swapped.jsonl"]),
                        ("none", ["--set", "data.knowledge_graph=null"]),
                        ("one", ["--set", "data.knowledge_graph=kg/graphs/test_000.jsonl"])):
        evaluated = cli_main("eval", model_dir, "--out", tmp_path / f"{name}.json", *extra)
        assert evaluated.returncode == 0, evaluated.stderr
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert scores["own"]["overall"] == json.loads((tmp_path / "run" / "eval.json").read_text())["overall"]
    # each image read its own graph: naming another one changes the model's confidences
    own, swapped = ({r["question_id"]: r["confidence"] for r in map(json.loads, (
        tmp_path / f"{k}_predictions.jsonl").read_text().splitlines())} for k in ("own", "swapped"))
    assert own.keys() == swapped.keys() and own != swapped
    assert "without the knowledge graph" in cli_main("eval", model_dir, "--set", "data.knowledge_graph=null").stderr

    scenes = json.loads((kg_data / "scenes" / "test_scenes.json").read_text())
    scene_file = tmp_path / "scene.json"
    scene_file.write_text(json.dumps({"size": scenes["size"], "objects": scenes["scenes"][0]["objects"]}))
    image = kg_data / "images" / "test" / scenes["scenes"][0]["file_name"]
    ask = ("predict", model_dir, "--image", image, "--question", "Is the red object heavy?", "--scene", scene_file)
    facts = [tmp_path / f"{w}.jsonl" for w in ("heavy", "light")]
    for path in facts:
        path.write_text(json.dumps({"head": "red", "relation": "has_weight", "tail": path.stem}) + "\n")
    given = cli_main(*ask, "--knowledge-graph", facts[0])
    assert given.returncode == 0 and "note:" not in given.stderr, given.stderr
    predictor = vlfuse.load(model_dir)
    heavy, light = (predictor.predict(image, ask[5], scene=scene_file, knowledge_graph=f) for f in facts)
    assert given.stdout.splitlines()[0] == heavy.answer
    assert heavy.top != light.top  # the facts given are read: other facts, other probabilities
    alone = cli_main(*ask)
    assert alone.returncode == 0 and "reads a knowledge graph per sample" in alone.stderr
    unknown = cli_main(*ask, "--knowledge-graph", kg_data / "kg_unknown.jsonl")
    assert unknown.returncode != 0 and "relation 'colour_of' is not one the model was trained with" in unknown.stderr

    (kg_data / "kg" / "bad.jsonl").write_text(re.sub(r"graphs/test_\d+", "graphs/test_009",
                                                     (kg_data / "kg" / "test.jsonl").read_text()))
    bad = cli_main("eval", model_dir, "--set", "data.test.path=kg/bad.jsonl", "--set", "data.on_bad_sample=error")
    assert bad.returncode != 0
    assert re.search(r"error: .*bad.jsonl:\d+ \[knowledge_graph\]: knowledge graph file not found: .*test_009.jsonl",
                     bad.stderr)


def test_cli_refuses_a_knowledge_graph_for_other_fusions(cli_main, kg_data, tmp_path):
    result = cli_main("train", "configs/kg_shapes.yaml", "--set", f"data.root={kg_data}",
                      "--set", "model.fusion={name: concat}")
    assert result.returncode != 0
    assert "'data.knowledge_graph' is set, but task vqa with model.fusion 'concat' reads no graph" in result.stderr
