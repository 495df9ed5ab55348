"""Scene graphs from the data (vlfuse.data.scene_graph) read by graph fusion through the model."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA, tiny_model
from vlfuse.config import load_config
from vlfuse.data.formats.fields import Where
from vlfuse.data.records import VQASample
from vlfuse.data.scene_graph import (RELATION_ID, SceneGraph, batch_scene_graphs, coco_scene, encode_scene_graphs,
                                     nlvr_scene, read_scene_graphs, scene_from_json, shapes_scene)
from vlfuse.data.tokenizer import build_tokenizer
from vlfuse.errors import ConfigError, DataError

NLVR_DEV = SHARED_DATA / "nlvr-dev" / "dev.json"
COCO_INSTANCES = SHARED_DATA / "coco-mini" / "annotations" / "instances_val2017.json"
GRAPH_FUSION = "model.fusion={name: graph, layers: 1, heads: 2, spatial_k: 3, relations: 16, dropout: 0.0}"
WHERE = Where(Path("scene.json"))


# --------------------------------------------------------------------------- graphs from scenes

def test_hand_worked_built_in_scene():
    # 100 px image: red circle at (20, 50), blue square at (80, 50), green circle at (50, 10)
    objects = [{"color": "red", "shape": "circle", "x": 20, "y": 50, "radius": 10},
               {"color": "blue", "shape": "square", "x": 80, "y": 50, "radius": 10},
               {"color": "green", "shape": "circle", "x": 50, "y": 10, "radius": 5}]
    graph = shapes_scene(objects, 100, WHERE)
    assert graph.names == ("red circle", "blue square", "green circle")
    expected = [(0.1, 0.4, 0.3, 0.6), (0.7, 0.4, 0.9, 0.6), (0.45, 0.05, 0.55, 0.15)]
    assert [pytest.approx(box) for box in expected] == list(graph.boxes)
    red, blue, green = graph.names
    # distances: red-blue 60, red-green 50, blue-green 50 (the tie at green goes to the first object)
    assert graph.triples() == {
        (red, "left_of", green), (red, "left_of", blue), (green, "left_of", blue),
        (green, "above", red), (green, "above", blue),  # red and blue share a height: neither is above
        (red, "nearest", green), (red, "near_2", blue), (red, "furthest", blue),
        (blue, "nearest", green), (blue, "near_2", red), (blue, "furthest", red),
        (green, "nearest", red), (green, "near_2", blue), (green, "furthest", blue),
        (red, "same_type", green),
    }


def test_bad_scene_names_the_field():
    with pytest.raises(DataError, match=r"scene.json \[objects\[1\]\.radius\]: missing field"):
        scene_from_json({"size": 64, "objects": [{"color": "red", "shape": "circle", "x": 1, "y": 2, "radius": 3},
                                                 {"color": "red", "shape": "circle", "x": 1, "y": 2}]}, WHERE)
    with pytest.raises(DataError, match="expected a scene"):
        scene_from_json({"nothing": 1})
    with pytest.raises(DataError, match=r"\[boxes\[0\]\]: a box is"):
        scene_from_json({"boxes": [[0, 0, 1]], "categories": ["dog"]}, WHERE)
    assert scene_from_json({"boxes": [[0, 0, 0.5, 0.5]], "categories": ["dog"]}).names == ("dog",)


def _nlvr_rows(count: int) -> list[dict]:
    if not NLVR_DEV.is_file():
        pytest.skip(f"NLVR dev data not found at {NLVR_DEV}")
    with NLVR_DEV.open() as f:
        return [json.loads(line) for line in itertools.islice(f, count)]


def test_nlvr_structured_rep_of_a_real_row():
    row = next(r for r in _nlvr_rows(1000) if r["identifier"] == "1373-0")
    graph = nlvr_scene(row["structured_rep"], 0, WHERE)
    objects = sum(len(box) for box in row["structured_rep"])
    assert len(graph.names) == objects + 3 and graph.names[-3:] == ("box",) * 3
    assert graph.names[:2] == ("blue small square", "blue medium square")  # box 0: x 90 y 41 size 10; x 45 y 80 size 20
    assert graph.boxes[0] == pytest.approx((90 / 400, 0.41, 100 / 400, 0.51))
    assert graph.boxes[objects] == pytest.approx((0.0, 0.0, 0.25, 1.0))  # the first box, leftmost in image 0
    small, box0 = 0, objects
    relations = set(graph.relations)
    assert (small, "inside", box0) in relations and (small, "touches_edge", box0) in relations
    assert (small, "nearest", 1) in relations  # its only neighbour in the box is the other blue square
    assert not any(o == small for s, r, o in relations if r == "nearest" and graph.boxes[s][0] > 0.3)  # other boxes
    # image 1 draws the boxes in the order (0, 2, 1): box 1's objects move to the right
    moved = nlvr_scene(row["structured_rep"], 1, WHERE)
    assert moved.boxes[objects + 1] == pytest.approx((300 / 400, 0.0, 1.0, 1.0))


def test_nlvr_reader_samples_get_the_graph_of_their_image():
    if not NLVR_DEV.is_file():
        pytest.skip(f"NLVR dev data not found at {NLVR_DEV}")
    from vlfuse.config import DataConfig, SplitConfig
    from vlfuse.data.formats.nlvr import read_nlvr

    samples = read_nlvr(NLVR_DEV, check_images=False).samples[:12]  # two sentences, six images each
    data = DataConfig(format="nlvr", root=str(NLVR_DEV.parent), train=SplitConfig(path="dev.json"),
                      scene_graphs="auto")
    graphs = read_scene_graphs(data, "train", samples)
    assert set(graphs) == {s.image_path for s in samples}
    for sample in samples:
        expected = nlvr_scene(sample.extra["scene"], sample.extra["image_index"], WHERE)
        assert graphs[sample.image_path] == expected
    first, second = graphs[samples[0].image_path], graphs[samples[2].image_path]  # images 0 and 2: boxes swap
    assert first.names == second.names and first.boxes != second.boxes


def test_nlvr_boxes_match_the_rendered_pixels():
    """Each object's box centre shows the object's colour in all six renderings of a scene."""
    from PIL import Image

    colours = {"blue": (0, 153, 255), "black": (0, 0, 0), "yellow": (255, 255, 0)}
    checked = 0
    for row in _nlvr_rows(12):
        for k in range(6):
            image = NLVR_DEV.parent / "images" / row["directory"] / f"dev-{row['identifier']}-{k}.png"
            if not image.is_file():
                continue
            pixels = Image.open(image).convert("RGB")
            graph = nlvr_scene(row["structured_rep"], k, WHERE)
            for name, (x0, y0, x1, y1) in zip(graph.names, graph.boxes):
                if name == "box":
                    continue
                x, y = int((x0 + x1) / 2 * pixels.width), int((y0 + y1) / 2 * pixels.height)
                seen = pixels.getpixel((min(x, pixels.width - 1), min(y, pixels.height - 1)))
                nearest = min(colours, key=lambda c: sum((a - b) ** 2 for a, b in zip(colours[c], seen)))
                assert nearest == name.split()[0], (image.name, name, seen)
                checked += 1
    assert checked > 100


def test_coco_instances_of_the_real_sample():
    if not COCO_INSTANCES.is_file():
        pytest.skip(f"COCO instances not found at {COCO_INSTANCES}")
    from vlfuse.config import DataConfig
    from vlfuse.data.formats.coco import read_coco_instances

    regions = read_coco_instances(COCO_INSTANCES, check_images=False).samples
    region = max(regions, key=lambda r: len(r.boxes))
    data = DataConfig(root=str(SHARED_DATA / "coco-mini"), scene_graphs="annotations/instances_{split}2017.json")
    sample = VQASample(1, region.image_id, Path("anywhere") / f"{region.image_id}.jpg", "what?", "yes")
    graph = read_scene_graphs(data, "val", [sample])[sample.image_path]
    kept = [(b, c) for b, c, crowd in zip(region.boxes, region.categories, region.extra["iscrowd"]) if not crowd]
    assert len(graph.names) == min(len(kept), 32) > 2
    largest = sorted(kept, key=lambda k: -(k[0][2] - k[0][0]) * (k[0][3] - k[0][1]))[:32]
    assert sorted(graph.names) == sorted(category for _, category in largest)
    areas = [(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in graph.boxes]
    assert areas == sorted(areas, reverse=True)  # the largest first
    relations = set(graph.relations)
    for s, o in itertools.permutations(range(len(graph.names)), 2):
        assert not ((s, "left_of", o) in relations and (o, "left_of", s) in relations)
    assert all(sum(1 for t in relations if t[0] == s and t[1] == "nearest") == 1 for s in range(len(graph.names)))
    for s, r, o in relations:
        if r == "inside":  # the smaller box lies (90%) within the larger
            a, b = graph.boxes[s], graph.boxes[o]
            inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
            assert inter >= 0.9 * areas[s] - 1e-9 and areas[s] < areas[o]
    assert coco_scene([(0, 0, 1, 1), (0.1, 0.1, 0.2, 0.2)], ["a", "b"], [True, False]).names == ("b",)


# --------------------------------------------------------------------------- batching

def _two_graphs():
    small = SceneGraph(("red circle",), ((0.1, 0.1, 0.3, 0.3),), ())
    large = shapes_scene([{"color": c, "shape": s, "x": x, "y": 20, "radius": 5}
                          for c, s, x in [("green", "square", 10), ("blue", "triangle", 30), ("red", "circle", 50)]],
                         64, WHERE)
    tokenizer = build_tokenizer(["what is the red object", "green square blue triangle red circle"])
    return small, large, tokenizer


def test_batching_pads_and_masks():
    small, large, tokenizer = _two_graphs()
    encoded = encode_scene_graphs({Path("a"): small, Path("b"): large}, tokenizer)
    batch = batch_scene_graphs([encoded[Path("a")], encoded[Path("b")]])
    assert batch.entity_ids.shape == (2, 3, 2) and batch.relations.shape == (2, len(large.relations), 3)
    assert batch.entity_mask.tolist() == [[True, False, False], [True, True, True]]
    assert batch.entity_token_mask[0].tolist() == [[True, True], [False, False], [False, False]]
    assert batch.entity_ids[0, 1:].eq(0).all() and batch.entity_boxes[0, 1:].eq(0).all()
    assert batch.relation_mask[0].sum() == 0 and batch.relation_mask[1].all()
    assert tokenizer.decode(batch.entity_ids[1, 1].tolist()) == "blue triangle"
    assert batch.entity_boxes[1, 2].tolist() == pytest.approx([45 / 64, 15 / 64, 55 / 64, 25 / 64])
    # (subject, object, relation id): green square is left of blue triangle
    assert [0, 1, RELATION_ID["left_of"]] in batch.relations[1].tolist()
    # the word-level [PAD]/[UNK] are not words the model matches questions against
    unknown = encode_scene_graphs({Path("c"): SceneGraph(("purple circle",), ((0, 0, 1, 1),), ())}, tokenizer)
    assert unknown[Path("c")].content == ((False, True),)


# --------------------------------------------------------------------------- the model

@pytest.fixture(scope="module")
def graph_model(tmp_path_factory):
    from vlfuse.models.factory import build_model

    small, large, tokenizer = _two_graphs()
    config = load_config(None, [*tiny_model(fusion=None), GRAPH_FUSION])
    torch.manual_seed(0)
    model = build_model(config, tokenizer.get_vocab_size(), 5).eval()
    encoded = encode_scene_graphs({Path("a"): small, Path("b"): large}, tokenizer)
    ids = torch.tensor([tokenizer.encode("what is the red object").ids, tokenizer.encode("what is the object").ids
                        + [0]])
    mask = ids != 0
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, tokenizer, encoded, images, ids, mask


def test_graph_changes_the_answer_and_padding_does_not(graph_model):
    model, _, encoded, images, ids, mask = graph_model
    a, b = encoded[Path("a")], encoded[Path("b")]
    with torch.no_grad():
        plain, _ = model(images, ids, mask)
        with_graph, _ = model(images, ids, mask, graph=batch_scene_graphs([b, b]))
        assert not torch.allclose(plain, with_graph, atol=1e-4)
        # the image with the small graph alone, and beside one with more entities, relations, longer names
        alone, _ = model(images[:1], ids[:1, :5], mask[:1, :5], graph=batch_scene_graphs([a]))
        padded, _ = model(images, ids, mask, graph=batch_scene_graphs([a, b]))
        torch.testing.assert_close(padded[0], alone[0], atol=1e-5, rtol=0)
        # an empty graph adds nothing
        empty = type(a)((), (), torch.zeros(0, 4), torch.zeros(0, 3, dtype=torch.long))
        torch.testing.assert_close(model(images, ids, mask, graph=batch_scene_graphs([empty, empty]))[0], plain,
                                   atol=1e-5, rtol=0)


def test_one_graph_per_image_serves_all_its_questions(graph_model):
    model, _, encoded, images, ids, mask = graph_model
    a, b = encoded[Path("a")], encoded[Path("b")]
    index = torch.tensor([1, 0, 1])
    q_ids, q_mask = ids[[0, 1, 1]], mask[[0, 1, 1]]
    with torch.no_grad():
        grouped, _ = model(images, q_ids, q_mask, index, graph=batch_scene_graphs([a, b]))
        rows, _ = model(images[index], q_ids, q_mask, graph=batch_scene_graphs([b, a, b]))
    torch.testing.assert_close(grouped, rows, atol=1e-5, rtol=0)


def test_gradients_reach_the_entity_name_embeddings(graph_model):
    model, tokenizer, encoded, images, ids, mask = graph_model
    model.zero_grad()
    logits, _ = model(images, ids, mask, graph=batch_scene_graphs([encoded[Path("a")], encoded[Path("b")]]))
    logits.pow(2).sum().backward()
    grad = model.text_encoder.embed.weight.grad
    for word in ("circle", "square", "triangle"):  # in entity names only, never in the questions
        assert grad[tokenizer.token_to_id(word)].abs().sum() > 0, word
    model.zero_grad()


def test_mentions_join_question_words_to_named_entities(graph_model):
    from vlfuse.models.scene_graph_input import external_graph

    model, tokenizer, encoded, images, ids, mask = graph_model
    graph = batch_scene_graphs([encoded[Path("b")], encoded[Path("b")]])
    image, text = model.image_encoder(images), model.text_encoder(ids, mask)
    external = external_graph(model.text_encoder, model.fusion, graph, image, text, ids, mask, None)
    nt, nv = ids.shape[1], image.tokens.shape[1]
    mentions = external.edges[external.edge_mask & (external.edges[..., 2] == RELATION_ID["mentions"])]
    red = tokenizer.decode(ids[0].tolist()).split().index("red")
    # question 0 says "red": its word joins "red circle" (entity 2); question 1 names nothing
    assert mentions.tolist() == [[red, nt + nv + 2, RELATION_ID["mentions"]]]
    depicts = external.edge_mask & (external.edges[..., 2] == RELATION_ID["depicts"])
    assert depicts.sum(1).tolist() == [3, 3]  # every entity to one image token
    assert external.edges[depicts][:, 1].sub(nt).lt(nv).all()


def test_config_errors_name_the_key():
    from vlfuse.data.scene_graph import check_scene_graph_config

    config = load_config(None, ["data.scene_graphs=auto"])  # default fusion: cross_attention
    with pytest.raises(ConfigError, match="data.scene_graphs"):
        check_scene_graph_config(config)
    config = load_config(None, ["data.scene_graphs=auto", "model.fusion={name: graph, relations: 4}"])
    with pytest.raises(ConfigError, match="model.fusion.relations"):
        check_scene_graph_config(config)
    with pytest.raises(ConfigError, match="gqa has no scene graphs"):
        read_scene_graphs(load_config(None, ["data.scene_graphs=auto", "data.format=gqa"]).data, "train", [])
    with pytest.raises(DataError, match="scene graph file not found"):
        read_scene_graphs(load_config(None, ["data.scene_graphs=none_{split}.json"]).data, "train", [])


# --------------------------------------------------------------------------- end to end

def test_cli_trains_evaluates_and_predicts_with_scene_graphs(cli_main, shapes_root, write_config, tmp_path):
    import vlfuse

    config = write_config(tmp_path / "graph.yaml", shapes_root, tmp_path / "run", GRAPH_FUSION,
                          "data.scene_graphs=auto", "train.epochs=1")
    result = cli_main("train", config)
    assert result.returncode == 0, result.stdout + result.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["steps"] > 0 and run["scene_graphs"]["empty"] == 0 and run["scene_graphs"]["entities_per_image"] == 6
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["overall"]["count"] > 0
    model_dir = tmp_path / "run" / "model"
    assert "scene_graphs: auto" in (model_dir / "config.yaml").read_text()
    evaluated = cli_main("eval", model_dir, "--out", tmp_path / "again.json")  # reads the test split's scenes
    assert evaluated.returncode == 0, evaluated.stderr
    assert (json.loads((tmp_path / "again.json").read_text())["overall"]
            == json.loads((tmp_path / "run" / "eval.json").read_text())["overall"])

    scenes = json.loads((shapes_root / "scenes" / "test_scenes.json").read_text())
    scene = scenes["scenes"][0]
    image = shapes_root / "images" / "test" / scene["file_name"]
    scene_file = tmp_path / "scene.json"
    scene_file.write_text(json.dumps({"size": scenes["size"], "objects": scene["objects"]}))
    question = "What is the shape of the object closest to the red object?"
    with_scene = cli_main("predict", model_dir, "--image", image, "--question", question, "--scene", scene_file)
    assert with_scene.returncode == 0, with_scene.stderr
    predictor = vlfuse.load(model_dir)
    expected = predictor.predict(image, question, scene=scene_file)
    assert with_scene.stdout.splitlines()[0] == expected.answer
    without = cli_main("predict", model_dir, "--image", image, "--question", question)
    assert without.returncode == 0 and "trained with scene graphs" in without.stderr
    with pytest.warns(UserWarning, match="trained with scene graphs"):
        predictor.predict(image, question)
