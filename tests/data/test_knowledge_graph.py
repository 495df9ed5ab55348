"""A user's knowledge graph (vlfuse.data.knowledge_graph): reading triples, linking them to scene
entities, joining them to scene graphs, and the config that names them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from vlfuse.config import load_config
from vlfuse.data.knowledge_graph import (KG_LINK, NO_BOX, check_relations, join_knowledge_graph, join_scene_graphs,
                                         fact_name, links, make_knowledge_graph, read_knowledge_graph, relation_ids,
                                         sample_knowledge_graphs, save_knowledge_graph, training_knowledge_graph,
                                         vocabulary_graph, with_vocabulary)
from vlfuse.data.scene_graph import RELATION_ID, RELATIONS, SceneGraph
from vlfuse.errors import ConfigError, DataError

TRIPLES = [("red", "has_weight", "heavy"), ("green", "has_weight", "light"), ("circle", "made_of", "wood"),
           ("heavy", "is_a", "weight")]


def write_jsonl(path, rows: list[str]):
    path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def jsonl_rows(triples=TRIPLES) -> list[str]:
    return [f'{{"head": "{h}", "relation": "{r}", "tail": "{t}"}}' for h, r, t in triples]


# --------------------------------------------------------------------------- reading

def test_jsonl_and_csv_read_the_same_graph(tmp_path):
    jsonl = write_jsonl(tmp_path / "kg.jsonl", jsonl_rows() + ["", jsonl_rows()[0]])  # a blank line, a repeat
    csv = tmp_path / "kg.csv"
    csv.write_text("head,relation,tail,note\n" + "".join(f"{h}, {r},{t},x\n" for h, r, t in TRIPLES),
                   encoding="utf-8")
    a, b = read_knowledge_graph(jsonl), read_knowledge_graph(csv)
    assert a.triples == b.triples == tuple(TRIPLES)  # stripped, repeats dropped, file order kept
    assert a.vocabulary == ("has_weight", "made_of", "is_a")
    assert a.entities == ("red", "heavy", "green", "light", "circle", "wood", "weight")


def test_relation_ids_extend_the_builtin_vocabulary():
    graph = make_knowledge_graph(TRIPLES + [("red", "left_of", "green")])  # a built-in name keeps its id
    ids = relation_ids(graph)
    assert {name: ids[name] for name in RELATIONS} == RELATION_ID
    assert ids[KG_LINK] == len(RELATIONS)
    assert [ids[r] for r in ("has_weight", "made_of", "is_a")] == [len(RELATIONS) + 1 + k for k in range(3)]
    assert ids["left_of"] == RELATION_ID["left_of"] and len(ids) == len(RELATIONS) + 4
    assert relation_ids(None) == RELATION_ID


@pytest.mark.parametrize("rows, message", [
    (['{"head": "red", "relation": "has_weight"}'], r"kg.jsonl:1 \[tail\]: missing field 'tail'"),
    (['{"head": "red", "relation": "has_weight", "tail": "heavy"}', '{"head": "red", "relation": 3, "tail": "x"}'],
     r"kg.jsonl:2 \[relation\]: relation must be a string, got int"),
    (['{"head": " ", "relation": "r", "tail": "x"}'], r"kg.jsonl:1 \[head\]: empty head"),
    (['["red", "has_weight", "heavy"]'], r"kg.jsonl:1: expected an object, got list"),
    (['{"head": "red", "relation": "r", "tail": "x"}', '{"head": "red",'], r"kg.jsonl:2"),
    ([], r"kg.jsonl: the knowledge graph holds no triples"),
])
def test_bad_jsonl_lines_are_named(tmp_path, rows, message):
    with pytest.raises(DataError, match=message):
        read_knowledge_graph(write_jsonl(tmp_path / "kg.jsonl", rows))


@pytest.mark.parametrize("text, message", [
    ("head,relation\nred,has_weight\n", r"kg.csv:1 \[tail\]: CSV header lacks column\(s\) 'tail'"),
    ("head,relation,tail\nred,has_weight,heavy\ngreen,,light\n", r"kg.csv:3 \[relation\]: empty relation"),
    ("head,relation,tail\nred,has_weight,heavy,extra\n", r"kg.csv:2: row has more cells than the header"),
])
def test_bad_csv_rows_are_named(tmp_path, text, message):
    path = tmp_path / "kg.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_knowledge_graph(path)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="knowledge graph file not found"):
        read_knowledge_graph(tmp_path / "none.jsonl")
    with pytest.raises(DataError, match=r"unsupported knowledge graph format '.ttl'"):
        read_knowledge_graph(tmp_path / "kg.ttl")


def test_saved_copy_round_trips_with_its_vocabulary(tmp_path):
    graph = make_knowledge_graph(TRIPLES, "kg.jsonl")
    save_knowledge_graph(tmp_path, graph)
    again = read_knowledge_graph(tmp_path / "knowledge_graph.json")
    assert again.triples == graph.triples and again.vocabulary == graph.vocabulary
    # a graph swapped in later reads with the model's ids, and may not bring new relations
    fewer = with_vocabulary(make_knowledge_graph([("green", "made_of", "wood")]), graph.vocabulary, "other.jsonl")
    assert relation_ids(fewer)["made_of"] == relation_ids(graph)["made_of"]
    with pytest.raises(DataError, match=r"other.jsonl \[relation\]: relation 'colour_of' is not one the model"):
        with_vocabulary(make_knowledge_graph([("a", "colour_of", "b")]), graph.vocabulary, "other.jsonl")


# --------------------------------------------------------------------------- linking and joining

SCENE = SceneGraph(("red circle", "blue square", "red square"),
                   ((0.1, 0.1, 0.2, 0.2), (0.5, 0.5, 0.6, 0.6), (0.7, 0.1, 0.8, 0.2)),
                   ((0, "left_of", 1), (0, "same_colour", 2)))


def test_links_by_the_words_of_the_names():
    names = SCENE.names
    assert links("red", names) == [0, 2]
    assert links("Square", names) == [1, 2]  # case-insensitive
    assert links("red square", names) == [2]  # every word of the entity's name
    assert links("heavy", names) == [] and links("green", names) == []
    assert links("red circle", ("red circles",)) == []  # whole words, not substrings


def test_join_adds_linked_entities_their_neighbours_and_triples():
    graph = make_knowledge_graph(TRIPLES)
    joined = join_knowledge_graph(SCENE, graph, hops=1)
    # linked: red (scene 0, 2), circle (scene 0); one hop: heavy (from red), wood (from circle)
    assert joined.names == SCENE.names + ("red", "circle", "heavy", "wood")
    assert joined.boxes[3:] == (NO_BOX,) * 4 and joined.boxes[:3] == SCENE.boxes
    added = set(joined.relations) - set(SCENE.relations)
    assert added == {(3, "has_weight", 5), (4, "made_of", 6), (3, KG_LINK, 0), (3, KG_LINK, 2), (4, KG_LINK, 0)}
    # green/light are not in the scene; "weight" is two hops away
    assert join_knowledge_graph(SCENE, graph, hops=2).names[3:] == ("red", "circle", "heavy", "wood", "weight")
    assert join_knowledge_graph(SCENE, graph, hops=0).names[3:] == ("red", "circle")
    # a scene that names nothing in the graph is left as it is
    assert join_knowledge_graph(SceneGraph(("dog",), ((0, 0, 1, 1),), ()), graph) == SceneGraph(
        ("dog",), ((0, 0, 1, 1),), ())


def test_facts_become_nodes_said_of_the_objects_their_heads_stand_for():
    graph = make_knowledge_graph(TRIPLES)
    plain, joined = join_knowledge_graph(SCENE, graph, hops=1), join_knowledge_graph(SCENE, graph, hops=1, facts=True)
    # the entities as without facts (3..6: red, circle, heavy, wood), then the facts: "red" stands for the
    # red circle (0) and the red square (2), "circle" for the red circle
    assert joined.names == plain.names + ("red circle has weight heavy", "red square has weight heavy",
                                          "red circle made of wood")
    assert joined.boxes[len(plain.names):] == (NO_BOX,) * 3  # placed nowhere, like the entities
    added = set(joined.relations) - set(plain.relations)
    assert added == {(7, KG_LINK, 0), (7, KG_LINK, 5), (8, KG_LINK, 2), (8, KG_LINK, 5), (9, KG_LINK, 0),
                     (9, KG_LINK, 6)}
    assert set(plain.relations) <= set(joined.relations)
    # a triple whose head stands for no scene entity reads as it is, linked to its head and tail
    two_hops = join_knowledge_graph(SCENE, graph, hops=2, facts=True)
    fact = two_hops.names.index("heavy is a weight")
    assert {(s, o) for s, r, o in two_hops.relations if s == fact} == {
        (fact, two_hops.names.index("heavy")), (fact, two_hops.names.index("weight"))}
    assert fact_name("traffic light", "used_for", "crossing") == "traffic light used for crossing"
    # per image, as join_scene_graphs is called for training and evaluation
    assert join_scene_graphs({Path("a"): SCENE}, graph, 1, facts=True) == {Path("a"): joined}


# --------------------------------------------------------------------------- config

def test_config_names_the_key_and_checks_its_range():
    graph = ["data.scene_graphs=auto", "model.fusion={name: graph, relations: 20}"]
    config = load_config(None, [*graph, "data.knowledge_graph=kg.jsonl", "data.knowledge_hops=2"])
    assert config.data.knowledge_graph == "kg.jsonl" and config.data.knowledge_hops == 2
    with pytest.raises(ConfigError, match="'data.knowledge_graph' is set, but task vqa with model.fusion "
                                          "'cross_attention' reads no graph"):
        load_config(None, ["data.scene_graphs=auto", "data.knowledge_graph=kg.jsonl"])
    with pytest.raises(ConfigError, match="data.scene_graphs is null"):
        load_config(None, ["model.fusion={name: graph}", "data.knowledge_graph=kg.jsonl"])
    with pytest.raises(ConfigError, match=r"'data.knowledge_hops' must be >= 0 and <= 4, got 5"):
        load_config(None, [*graph, "data.knowledge_graph=kg.jsonl", "data.knowledge_hops=5"])
    with pytest.raises(ConfigError, match="data.knowledge_hops"):
        load_config(None, ["data.knowledge_hops=two"])
    small = load_config(None, ["data.scene_graphs=auto", "model.fusion={name: graph, relations: 16}",
                               "data.knowledge_graph=kg.jsonl"])
    with pytest.raises(ConfigError, match="'model.fusion.relations' is 16, but .* use 19 relations"):
        check_relations(small, make_knowledge_graph(TRIPLES))


def test_evaluation_graph_follows_the_config(capsys):
    from vlfuse.data.knowledge_graph import evaluation_knowledge_graph
    from vlfuse.models.saved import SavedModel

    plain = load_config(None, ["data.scene_graphs=auto", "model.fusion={name: graph, relations: 20}"])
    wanted = load_config(None, ["data.scene_graphs=auto", "model.fusion={name: graph, relations: 20}",
                                "data.knowledge_graph=kg.jsonl"])
    without = SavedModel(None, plain, None, None)
    assert evaluation_knowledge_graph(without, plain) is without
    with pytest.raises(ConfigError, match="trained without a knowledge graph"):
        evaluation_knowledge_graph(without, wanted)
    trained = SavedModel(None, wanted, None, None, make_knowledge_graph(TRIPLES))
    assert evaluation_knowledge_graph(trained, wanted) is trained  # the saved copy
    ablated = evaluation_knowledge_graph(trained, plain)  # --set data.knowledge_graph=null: none
    assert ablated.knowledge_graph is None and "without the knowledge graph" in capsys.readouterr().err


def test_join_links_as_links_does():
    graph = make_knowledge_graph([("red square", "is_a", "thing"), ("square", "is_a", "thing"), ("Blue", "near", "red"),
                                  ("thing", "is_a", "thing")])  # a self-loop counts once
    joined = join_knowledge_graph(SCENE, graph, hops=0)
    index = {name: i for i, name in enumerate(joined.names)}
    found = {(joined.names[s], o) for s, r, o in joined.relations if r == KG_LINK}
    assert found == {(e, i) for e in graph.entities for i in links(e, SCENE.names)}
    assert found == {("red square", 2), ("square", 1), ("square", 2), ("Blue", 1), ("red", 0), ("red", 2)}
    assert (index["Blue"], "near", index["red"]) in joined.relations
    looped = join_knowledge_graph(SCENE, graph, hops=1)
    assert [r for r in looped.relations if r[1] == "is_a" and r[0] == r[2]] == [(looped.names.index("thing"), "is_a",
                                                                                  looped.names.index("thing"))]


# --------------------------------------------------------------------------- a graph per sample

def per_sample_table(tmp_path, refs: list, images=("a.png", "a.png", "b.png")) -> list:
    """A JSONL table whose rows name their graphs (refs: the knowledge_graph values, None: no field)."""
    rows = []
    for k, (image, ref) in enumerate(zip(images, refs)):
        row = {"image": image, "question": "Is the red object heavy?", "answer": "yes", "question_id": k}
        rows.append(json.dumps(row if ref is None else {**row, "knowledge_graph": ref}))
    return rows


def read_table(path, rows):
    from vlfuse.data.formats.jsonl import read_vqa_jsonl

    return read_vqa_jsonl(write_jsonl(path, rows), check_images=False).samples


def test_rows_name_their_own_graphs_and_each_image_joins_its_own(tmp_path):
    (tmp_path / "graphs").mkdir()
    write_jsonl(tmp_path / "graphs" / "g1.jsonl", jsonl_rows([("red", "has_weight", "heavy")]))
    (tmp_path / "graphs" / "g2.csv").write_text("head,relation,tail\nred,has_weight,light\nred,made_of,wood\n",
                                                encoding="utf-8")
    table = tmp_path / "train.jsonl"
    samples = read_table(table, per_sample_table(tmp_path, ["graphs/g1.jsonl", "./graphs/g1.jsonl", "graphs/g2.csv"]))
    assert samples[0].extra["knowledge_graph"] == str(tmp_path / "graphs" / "g1.jsonl")  # resolved by the table
    per_image = sample_knowledge_graphs(samples, table)
    a, b = samples[0].image_path, samples[2].image_path
    assert per_image[a].triples == (("red", "has_weight", "heavy"),)
    assert per_image[b].triples == (("red", "has_weight", "light"), ("red", "made_of", "wood"))
    model_graph = vocabulary_graph(per_image.values())
    assert model_graph.triples == () and model_graph.vocabulary == ("has_weight", "made_of")

    scene = SceneGraph(("red circle",), ((0.1, 0.1, 0.2, 0.2),), ())
    joined = join_scene_graphs({a: scene, b: scene, Path("c.png"): scene}, model_graph, 1, per_image)
    facts = {image: {(g.names[s], r, g.names[o]) for s, r, o in g.relations if r != KG_LINK}
             for image, g in joined.items()}
    assert facts == {a: {("red", "has_weight", "heavy")}, b: {("red", "has_weight", "light"), ("red", "made_of", "wood")},
                     Path("c.png"): set()}  # an image that names no graph is left as it is
    assert join_scene_graphs({a: scene}, model_graph, 1) == {a: scene}  # the model's own graph holds no triples


def test_per_sample_config_reads_the_train_and_val_rows(tmp_path):
    (tmp_path / "kg").mkdir()
    write_jsonl(tmp_path / "kg" / "g1.jsonl", jsonl_rows([("red", "has_weight", "heavy")]))
    write_jsonl(tmp_path / "kg" / "g2.jsonl", jsonl_rows([("circle", "made_of", "wood")]))
    train = SimpleNamespace(samples=read_table(tmp_path / "kg" / "train.jsonl", per_sample_table(
        tmp_path, ["g1.jsonl"] * 3)))
    val = SimpleNamespace(samples=read_table(tmp_path / "kg" / "val.jsonl", per_sample_table(
        tmp_path, ["g2.jsonl"], images=("v.png",))))
    config = load_config(None, ["data.format=jsonl", f"data.root={tmp_path}", "data.train={path: kg/train.jsonl}",
                                "data.val={path: kg/val.jsonl}", "data.scene_graphs=scenes.json",
                                "model.fusion={name: graph, relations: 18}", "data.knowledge_graph=per_sample"])
    graph, per_image = training_knowledge_graph(config, train=train, val=val)
    assert graph.vocabulary == ("has_weight", "made_of") and len(per_image) == 3
    assert per_image[train.samples[2].image_path].triples == (("red", "has_weight", "heavy"),)
    with pytest.raises(ConfigError, match="is 17, but .* use 18 relations"):
        training_knowledge_graph(replace(config, model=replace(config.model, fusion={"name": "graph", "relations": 17})),
                                 train=train, val=val)
    with pytest.raises(ConfigError, match="'data.knowledge_graph' is per_sample, but data.format is vqa_v2"):
        load_config(None, ["data.format=vqa_v2", "data.scene_graphs=auto", "model.fusion={name: graph, relations: 20}",
                           "data.knowledge_graph=per_sample"])


@pytest.mark.parametrize("ref, message", [
    ("graphs/none.jsonl", r"t.jsonl:2 \[knowledge_graph\]: knowledge graph file not found: .*graphs/none.jsonl"),
    ("../g.jsonl", r"t.jsonl:2 \[knowledge_graph\]: knowledge_graph must be a relative path below the table's folder"),
    ("/etc/g.jsonl", r"t.jsonl:2 \[knowledge_graph\]: knowledge_graph must be a relative path"),
    (3, r"t.jsonl:2 \[knowledge_graph\]: knowledge_graph must be a relative path .*got 3"),
    ("g.ttl", r"t.jsonl:2 \[knowledge_graph\]: knowledge_graph must name a .jsonl or .csv file"),
])
def test_a_bad_graph_reference_names_the_row_and_field(tmp_path, ref, message):
    from vlfuse.data.formats.jsonl import read_vqa_jsonl

    write_jsonl(tmp_path / "g.jsonl", jsonl_rows())
    (tmp_path / "g.ttl").write_text("x", encoding="utf-8")
    rows = per_sample_table(tmp_path, ["g.jsonl", ref])
    with pytest.raises(DataError, match=message) as caught:
        read_vqa_jsonl(write_jsonl(tmp_path / "t.jsonl", rows), check_images=False)
    assert "\n" not in str(caught.value)


def test_per_sample_graphs_are_one_per_image_named_and_known(tmp_path):
    write_jsonl(tmp_path / "g1.jsonl", jsonl_rows([("red", "has_weight", "heavy")]))
    write_jsonl(tmp_path / "g2.jsonl", jsonl_rows([("red", "colour_of", "x")]))
    write_jsonl(tmp_path / "bad.jsonl", ['{"head": "red", "relation": "has_weight"}'])
    table = tmp_path / "t.jsonl"
    with pytest.raises(DataError, match=r"t.jsonl \[knowledge_graph \(question 1\)\]: names .*g2.jsonl, but another "
                                        r"question about image a.png names .*g1.jsonl"):
        sample_knowledge_graphs(read_table(table, per_sample_table(tmp_path, ["g1.jsonl", "g2.jsonl", "g1.jsonl"])), table)
    with pytest.raises(DataError, match=r"t.jsonl \[knowledge_graph \(question 2\)\]: no knowledge graph named"):
        sample_knowledge_graphs(read_table(table, per_sample_table(tmp_path, ["g1.jsonl", "g1.jsonl", None])), table)
    with pytest.raises(DataError, match=r"bad.jsonl:1 \[tail\]: missing field 'tail'"):  # the graph's own line
        sample_knowledge_graphs(read_table(table, per_sample_table(tmp_path, ["g1.jsonl", "g1.jsonl", "bad.jsonl"])),
                                table)
    # evaluation reads each image's graph with the model's relation ids, refusing a relation it never saw
    samples = read_table(table, per_sample_table(tmp_path, ["g1.jsonl", "g1.jsonl", "g2.jsonl"]))
    with pytest.raises(DataError, match=r"g2.jsonl \[relation\]: relation 'colour_of' is not one the model"):
        sample_knowledge_graphs(samples, table, ("has_weight",))


def test_a_per_sample_model_saves_its_relations_and_evaluates_either_way(tmp_path, capsys):
    from vlfuse.data.knowledge_graph import evaluation_knowledge_graph, load_saved_knowledge_graph
    from vlfuse.models.saved import SavedModel

    common = ["data.format=jsonl", "data.scene_graphs=s.json", "model.fusion={name: graph, relations: 20}"]
    per_sample = load_config(None, [*common, "data.knowledge_graph=per_sample"])
    save_knowledge_graph(tmp_path, vocabulary_graph([make_knowledge_graph(TRIPLES)]))
    saved = load_saved_knowledge_graph(tmp_path, per_sample)
    assert saved.triples == () and saved.vocabulary == ("has_weight", "made_of", "is_a")
    trained = SavedModel(None, per_sample, None, None, saved)
    assert evaluation_knowledge_graph(trained, per_sample) is trained
    assert evaluation_knowledge_graph(trained, load_config(None, common)).knowledge_graph is None
    # a model trained with one global graph can be evaluated with each sample's
    global_graph = SavedModel(None, load_config(None, [*common, "data.knowledge_graph=kg.jsonl"]), None, None,
                              make_knowledge_graph(TRIPLES))
    swapped = evaluation_knowledge_graph(global_graph, per_sample)
    assert swapped.knowledge_graph.triples == () and swapped.knowledge_graph.vocabulary == saved.vocabulary
    assert "each sample's knowledge graph" in capsys.readouterr().err
