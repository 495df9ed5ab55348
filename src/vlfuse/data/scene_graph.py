"""Scene graphs supplied with the data, for graph fusion's external nodes (types.ExternalGraph, fusion/graph.py).

A scene graph is a handful of entities, each named by its attributes as text ("red circle",
"yellow small triangle", "dog"), its box (x0, y0, x1, y1) in [0, 1] image coordinates, and
relation triples (subject, relation, object) over a fixed vocabulary, RELATIONS:

  left_of, above         centre of the subject left of / above the object's (each pair, one way)
  nearest, near_2..5     the object is the subject's k-th nearest (by centre distance; ties by order)
  furthest               the object is the subject's furthest
  same_type, same_colour, same_size   equal attribute (shape, NLVR type or COCO category; once a pair)
  inside                 the subject's box lies inside the object (an NLVR box; a larger COCO box)
  touches_edge           an NLVR object touching the wall of its box
  mentions, depicts      made by the model, not here: a question word naming an entity, and the image
                         token whose box overlaps an entity most (models/scene_graph_input.py)

Object-object relations are taken within a group only (an NLVR box; the whole image elsewhere),
so a scene with many objects does not turn into a dense graph.

Sources: the built-in generator's scenes (`scenes/{split}_scenes.json`: objects with colour, shape,
centre x, y and radius in pixels), NLVR's `structured_rep` (kept by formats/nlvr.py in
VQASample.extra["scene"]) and COCO instances (formats/coco.py: categories and boxes). For training,
`data.scene_graphs` names the source (see `read_scene_graphs`); `encode_scene_graphs` turns names
into token ids and `SceneGraphCollate` adds each image's graph to the VQA batches, padded.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, DataError
from .formats.fields import Where, as_list, as_object, number, require, required_text

RELATIONS = ("left_of", "above", "nearest", "near_2", "near_3", "near_4", "near_5", "furthest", "same_type",
             "same_colour", "same_size", "inside", "touches_edge", "mentions", "depicts")
RELATION_ID = {name: i for i, name in enumerate(RELATIONS)}
NEAR = ("nearest", "near_2", "near_3", "near_4", "near_5")  # distance ranks 1..5 from the subject
MAX_ENTITIES = 32  # a COCO image keeps its largest instances up to this many
MAX_NAME_TOKENS = 8
INSIDE_SHARE = 0.9  # a COCO box is inside another when this share of its area is

NLVR_COLOURS = {"#0099ff": "blue"}  # the one colour NLVR writes as hex; Yellow and Black are names
NLVR_SIZES = {10: "small", 20: "medium", 30: "large"}
NLVR_BOX, NLVR_GAP = 100, 50  # pixels: each box is 100 x 100, boxes 50 apart (a 400 x 100 image for 3)


@dataclass(frozen=True)
class SceneObject:
    """One object as the sources describe it; `group` is its container (an NLVR box), if any."""

    kind: str  # shape, NLVR type or COCO category
    box: tuple[float, float, float, float]
    colour: str | None = None
    size: str | None = None
    group: int | None = None

    @property
    def name(self) -> str:
        return " ".join(p for p in (self.colour, self.size, self.kind) if p)


@dataclass(frozen=True)
class SceneGraph:
    """Entities (names, boxes) and relation triples (subject index, relation, object index)."""

    names: tuple[str, ...]
    boxes: tuple[tuple[float, float, float, float], ...]
    relations: tuple[tuple[int, str, int], ...]

    def triples(self) -> set[tuple[str, str, str]]:
        """The relations with entity names, for reading and testing."""
        return {(self.names[s], r, self.names[o]) for s, r, o in self.relations}


EMPTY_GRAPH = SceneGraph((), (), ())


def _centre(box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _intersection(a, b) -> float:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def _pair_relations(objects: list[SceneObject], members: list[int]) -> list[tuple[int, str, int]]:
    """Geometry and attribute relations among the objects `members` (indices into `objects`)."""
    triples = []
    centres = {i: _centre(objects[i].box) for i in members}
    for s, o in itertools.permutations(members, 2):
        (sx, sy), (ox, oy) = centres[s], centres[o]
        if sx < ox:
            triples.append((s, "left_of", o))
        if sy < oy:
            triples.append((s, "above", o))
    for s in members:
        others = sorted((o for o in members if o != s), key=lambda o: math.dist(centres[s], centres[o]))
        triples += [(s, NEAR[rank], o) for rank, o in enumerate(others[:len(NEAR)])]
        if others:
            triples.append((s, "furthest", others[-1]))
    for s, o in itertools.combinations(members, 2):
        a, b = objects[s], objects[o]
        for relation, attribute in (("same_type", "kind"), ("same_colour", "colour"), ("same_size", "size")):
            if getattr(a, attribute) is not None and getattr(a, attribute) == getattr(b, attribute):
                triples.append((s, relation, o))
    return triples


def build_scene_graph(objects: list[SceneObject], containers: list[tuple[float, float, float, float]] = (),
                      container_name: str = "box", nested: bool = False, touch: float = 0.0) -> SceneGraph:
    """The graph of `objects` (entities 0..n-1, in order) and `containers` (entities n.., named
    `container_name`): pair relations within each group, `inside` and `touches_edge` (a side within
    `touch` of the container's wall) from each object to its container, `left_of` among
    containers; `nested`: `inside` between objects whose boxes nest (COCO)."""
    triples = []
    groups: dict[int | None, list[int]] = {}
    for i, obj in enumerate(objects):
        groups.setdefault(obj.group, []).append(i)
    for members in groups.values():
        triples += _pair_relations(objects, members)
    n = len(objects)
    for i, obj in enumerate(objects):
        if obj.group is None or not 0 <= obj.group < len(containers):
            continue
        box, wall = obj.box, containers[obj.group]
        triples.append((i, "inside", n + obj.group))
        if min(box[0] - wall[0], box[1] - wall[1], wall[2] - box[2], wall[3] - box[3]) <= touch:
            triples.append((i, "touches_edge", n + obj.group))
    for a, b in itertools.permutations(range(len(containers)), 2):
        if _centre(containers[a])[0] < _centre(containers[b])[0]:
            triples.append((n + a, "left_of", n + b))
    if nested:
        for s, o in itertools.permutations(range(n), 2):
            small, large = objects[s].box, objects[o].box
            if _area(small) < _area(large) and _intersection(small, large) >= INSIDE_SHARE * _area(small):
                triples.append((s, "inside", o))
    names = tuple(o.name for o in objects) + (container_name,) * len(containers)
    boxes = tuple(tuple(o.box) for o in objects) + tuple(tuple(c) for c in containers)
    return SceneGraph(names, boxes, tuple(triples))


# --------------------------------------------------------------------------- sources

def _clip_box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    return tuple(min(max(v, 0.0), 1.0) for v in (x0, y0, x1, y1))


def shapes_scene(objects: Any, size: float, where: Where) -> SceneGraph:
    """A built-in scene: objects {color, shape, x, y, radius} in pixels of a `size`-pixel image."""
    parsed = []
    for i, raw in enumerate(as_list(objects, where)):
        at = where.at(i)
        raw = as_object(raw, at)
        x, y, r = (number(require(raw, key, at), at.at(key), key) for key in ("x", "y", "radius"))
        parsed.append(SceneObject(required_text(raw, "shape", at), _clip_box((x - r) / size, (y - r) / size,
                                                                            (x + r) / size, (y + r) / size),
                                  colour=required_text(raw, "color", at)))
    return build_scene_graph(parsed)


def nlvr_scene(structured_rep: Any, image_index: int, where: Where) -> SceneGraph:
    """An NLVR scene as rendered in image k = `image_index`: objects named "colour size type", their
    boxes (entities too, named "box"), `inside` and `touches_edge` (x_loc, y_loc are the object's
    top-left corner inside its 100-pixel box; size its side).

    NLVR draws each scene six times with its boxes in the six orders of itertools.permutations:
    image k shows box permutations(range(n))[k][p] at position p (checked against the pixels of
    the real dev images in tests/data/test_scene_graph.py).
    """
    boxes = as_list(structured_rep, where)
    n = len(boxes)
    orders = list(itertools.permutations(range(n)))
    position = {box: p for p, box in enumerate(orders[image_index % len(orders)])} if n else {}
    width = n * NLVR_BOX + (n - 1) * NLVR_GAP
    objects, containers = [], []
    for b, contents in enumerate(boxes):
        left = position[b] * (NLVR_BOX + NLVR_GAP)
        containers.append(_clip_box(left / width, 0.0, (left + NLVR_BOX) / width, 1.0))
        for i, raw in enumerate(as_list(contents, where.at(b))):
            at = where.at(b).at(i)
            raw = as_object(raw, at)
            x, y, side = (number(require(raw, key, at), at.at(key), key) for key in ("x_loc", "y_loc", "size"))
            colour = required_text(raw, "color", at).lower()
            objects.append(SceneObject(required_text(raw, "type", at).lower(),
                                       _clip_box((left + x) / width, y / NLVR_BOX, (left + x + side) / width,
                                                 (y + side) / NLVR_BOX),
                                       colour=NLVR_COLOURS.get(colour, colour), size=NLVR_SIZES.get(int(side)),
                                       group=b))
    return build_scene_graph(objects, containers, touch=1e-6)


def coco_scene(boxes: Iterable, categories: Iterable[str], crowd: Iterable[bool] = (),
               max_entities: int = MAX_ENTITIES) -> SceneGraph:
    """COCO instances of one image (boxes as fractions, category names): the `max_entities` largest,
    crowd regions left out, with `inside` between nested boxes."""
    crowd = list(crowd)
    kept = [(tuple(box), name) for i, (box, name) in enumerate(zip(boxes, categories))
            if not (i < len(crowd) and crowd[i])]
    kept.sort(key=lambda item: -_area(item[0]))  # stable: equal areas keep the file's order
    return build_scene_graph([SceneObject(name, box) for box, name in kept[:max_entities]], nested=True)


# --------------------------------------------------------------------------- reading for a split

def check_scene_graph_config(config) -> None:
    """data.scene_graphs needs task vqa and a fusion that reads an external graph (graph)."""
    if not config.data.scene_graphs:
        return
    fusion = (config.model.fusion or {}).get("name")
    if fusion != "graph":
        raise ConfigError(f"config key 'data.scene_graphs' is set, but model.fusion is {fusion!r}, which reads no "
                          "scene graph: use model.fusion {name: graph} (configs/fusions/graph_scene.yaml) or set "
                          "data.scene_graphs: null")
    relations = config.model.fusion.get("relations", 16)
    if relations < len(RELATIONS):
        raise ConfigError(f"config key 'model.fusion.relations' is {relations}, but scene graphs use "
                          f"{len(RELATIONS)} relations: set it to at least {len(RELATIONS)}")


def _source(data, split: str) -> str:
    """The scene-graph source of `split`: 'nlvr' (the records' own), or a file path."""
    value = data.scene_graphs
    if value == "auto":
        if data.format == "nlvr":
            return "nlvr"
        if data.format == "vqa_v2":
            value = "scenes/{split}_scenes.json"  # the built-in generator's layout (data/shapes.py)
        else:
            raise ConfigError(f"config key 'data.scene_graphs' is auto, but format {data.format} has no scene "
                              "graphs of its own: name a scenes JSON or COCO instances JSON per split, e.g. "
                              "scenes/{split}_scenes.json")
    if value == "nlvr":
        if data.format != "nlvr":
            raise ConfigError(f"config key 'data.scene_graphs' is nlvr, but data.format is {data.format}")
        return "nlvr"
    return str(Path(data.root).expanduser() / value.replace("{split}", split))


def read_scene_graphs(data, split: str, samples: list) -> dict[Path, SceneGraph]:
    """The scene graph of each sample's image (by image path), from `data.scene_graphs`:

    auto      the format's own: nlvr, each row's structured_rep; vqa_v2, the built-in
              scenes/{split}_scenes.json under data.root
    nlvr      each NLVR row's structured_rep, as drawn in that image
    a path    under data.root, "{split}" replaced by the split's name: a scenes JSON
              ({"size", "scenes": [{"image_id", "file_name", "objects"}]}) or a COCO instances JSON;
              joined to the samples by image_id, else by file name

    An image the source does not describe gets an empty graph; the count goes to stderr.
    """
    source = _source(data, split)
    graphs: dict[Path, SceneGraph] = {}
    if source == "nlvr":
        where = Where(Path(str(getattr(getattr(data, split), "path", None) or "nlvr")), field="structured_rep")
        for sample in samples:
            if Path(sample.image_path) not in graphs:
                at = Where(where.path, field=f"structured_rep (identifier {sample.extra.get('identifier')})")
                graphs[Path(sample.image_path)] = nlvr_scene(sample.extra.get("scene"),
                                                              int(sample.extra.get("image_index", 0)), at)
        return graphs
    by_id, by_name = _read_scene_file(Path(source))
    missing = 0
    for sample in samples:
        path = Path(sample.image_path)
        if path in graphs:
            continue
        graph = by_id.get(str(sample.image_id)) or by_name.get(path.name)
        missing += graph is None
        graphs[path] = graph or EMPTY_GRAPH
    if missing:
        print(f"warning: {source}: no scene for {missing} of {len(graphs)} {split} images (they get empty "
              "graphs)", file=sys.stderr)
    return graphs


def _read_scene_file(path: Path) -> tuple[dict[str, SceneGraph], dict[str, SceneGraph]]:
    """(graphs by str(image_id), graphs by file name) from a scenes JSON or COCO instances JSON."""
    from .formats.common import read_json

    if not path.is_file():
        raise DataError("scene graph file not found (config key data.scene_graphs)", path=path)
    doc = read_json(path)
    where = Where(path)
    if isinstance(doc, dict) and "categories" in doc and "annotations" in doc:
        from .formats.coco import read_coco_instances

        read = read_coco_instances(path, path.parent, on_bad_sample="skip", check_images=False)
        if read.skipped.count:
            print(f"warning: {path}: {read.skipped.summary()}", file=sys.stderr)
        by_id, by_name = {}, {}
        for region in read.samples:
            graph = coco_scene(region.boxes, region.categories, region.extra.get("iscrowd", ()))
            by_id[str(region.image_id)], by_name[Path(region.image_path).name] = graph, graph
        return by_id, by_name
    doc = as_object(doc, where)
    size = number(require(doc, "size", where), where.at("size"), "size")
    if size <= 0:
        raise where.at("size").error(f"size must be positive, got {size}")
    by_id, by_name = {}, {}
    for i, scene in enumerate(as_list(require(doc, "scenes", where), where.at("scenes"))):
        at = where.at("scenes").at(i)
        scene = as_object(scene, at)
        graph = shapes_scene(require(scene, "objects", at), size, at.at("objects"))
        if "image_id" in scene:
            by_id[str(scene["image_id"])] = graph
        if isinstance(scene.get("file_name"), str):
            by_name[scene["file_name"]] = graph
    return by_id, by_name


def training_scene_graphs(config, **reads) -> dict[Path, SceneGraph]:
    """The graphs of every image of the given split reads (train=..., val=...; None reads are left
    out), after checking the config can use them; {} when data.scene_graphs is null."""
    if not config.data.scene_graphs:
        return {}
    check_scene_graph_config(config)
    graphs: dict[Path, SceneGraph] = {}
    for split, read in reads.items():
        if read is not None:
            graphs.update(read_scene_graphs(config.data, split, read.samples))
    return graphs


def scene_graph_summary(graphs: dict[Path, SceneGraph]) -> dict:
    """For run.json: how many images have a graph, entities and relations per image."""
    sizes = [(len(g.names), len(g.relations)) for g in graphs.values()]
    described = [s for s in sizes if s[0]]
    return {"images": len(sizes), "empty": len(sizes) - len(described),
            "entities_per_image": round(sum(s[0] for s in described) / max(len(described), 1), 2),
            "relations_per_image": round(sum(s[1] for s in described) / max(len(described), 1), 2)}


def entity_names(graphs: dict[Path, SceneGraph] | None) -> list[str]:
    """Every entity name once (for a word tokenizer's vocabulary)."""
    return list(dict.fromkeys(n for g in (graphs or {}).values() for n in g.names))


def scene_from_json(value: Any, where: Where | None = None) -> SceneGraph:
    """One scene for prediction: a built-in scene ({"size", "objects"}), an NLVR structured_rep (a list
    of boxes; {"structured_rep", "image_index"} for image k), or COCO-style {"boxes", "categories"}."""
    where = where or Where(Path("scene"))
    if isinstance(value, list):
        return nlvr_scene(value, 0, where)
    value = as_object(value, where)
    if "structured_rep" in value:
        return nlvr_scene(value["structured_rep"], int(value.get("image_index", 0)), where.at("structured_rep"))
    if "objects" in value:
        size = number(require(value, "size", where), where.at("size"), "size")
        return shapes_scene(value["objects"], size, where.at("objects"))
    if "boxes" in value:
        boxes = []
        for i, raw in enumerate(as_list(value["boxes"], where.at("boxes"))):
            at = where.at("boxes").at(i)
            box = tuple(number(v, at, "box value") for v in as_list(raw, at))
            if len(box) != 4:
                raise at.error(f"a box is [x0, y0, x1, y1] as fractions of the image, got {len(box)} numbers")
            boxes.append(box)
        categories = as_list(require(value, "categories", where), where.at("categories"))
        if len(categories) != len(boxes):
            raise where.at("categories").error(f"{len(categories)} categories for {len(boxes)} boxes")
        return coco_scene(boxes, [str(c) for c in categories])
    raise where.error("expected a scene: {size, objects} (built-in), {structured_rep} or a list of boxes (NLVR), "
                      "or {boxes, categories} (COCO-style)")


# --------------------------------------------------------------------------- tokens and batches

@dataclass(frozen=True)
class EncodedGraph:
    """A SceneGraph as the model reads it: name token ids, which of them are words (not [CLS]/[PAD]:
    the model matches question words against these), boxes [M, 4], relations [E, 3] (s, o, id)."""

    name_ids: tuple[tuple[int, ...], ...]
    content: tuple[tuple[bool, ...], ...]
    boxes: torch.Tensor
    relations: torch.Tensor


def encode_scene_graphs(graphs: dict[Path, SceneGraph], tokenizer, max_name_tokens: int = MAX_NAME_TOKENS,
                        relation_ids: dict[str, int] = RELATION_ID) -> dict[Path, EncodedGraph]:
    """relation_ids: the model's (RELATIONS, plus a knowledge graph's: data/knowledge_graph.py)."""
    from .tokenizer import encode_ids

    specials = {i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special}
    names = entity_names(graphs)
    ids = dict(zip(names, encode_ids(tokenizer, names, max_name_tokens))) if names else {}
    encoded = {}
    for path, graph in graphs.items():
        name_ids = tuple(tuple(ids[n]) for n in graph.names)
        encoded[path] = EncodedGraph(
            name_ids, tuple(tuple(i not in specials for i in row) for row in name_ids),
            torch.tensor(graph.boxes, dtype=torch.float32).reshape(-1, 4),
            torch.tensor([(s, o, relation_ids[r]) for s, r, o in graph.relations], dtype=torch.long).reshape(-1, 3))
    return encoded


@dataclass
class SceneGraphBatch:
    """The scene graphs of a batch's images, padded (not per question: the model expands them).

    entity_ids, entity_token_mask, entity_content: [B, M, L] name token ids, real tokens, word tokens;
    entity_mask [B, M]; entity_boxes [B, M, 4]; relations [B, E, 3] (subject, object, relation id);
    relation_mask [B, E].
    """

    entity_ids: torch.Tensor
    entity_token_mask: torch.Tensor
    entity_content: torch.Tensor
    entity_mask: torch.Tensor
    entity_boxes: torch.Tensor
    relations: torch.Tensor
    relation_mask: torch.Tensor

    def to(self, device) -> SceneGraphBatch:
        return SceneGraphBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def batch_scene_graphs(graphs: list[EncodedGraph]) -> SceneGraphBatch:
    """Pad to the batch's most entities, longest name and most relations (at least 1 of each)."""
    b = len(graphs)
    m = max([len(g.name_ids) for g in graphs] + [1])
    length = max([len(ids) for g in graphs for ids in g.name_ids] + [1])
    e = max([len(g.relations) for g in graphs] + [1])
    ids = torch.zeros(b, m, length, dtype=torch.long)
    token_mask = torch.zeros(b, m, length, dtype=torch.bool)
    content = torch.zeros(b, m, length, dtype=torch.bool)
    boxes = torch.zeros(b, m, 4)
    relations = torch.zeros(b, e, 3, dtype=torch.long)
    relation_mask = torch.zeros(b, e, dtype=torch.bool)
    for i, g in enumerate(graphs):
        for j, (name, words) in enumerate(zip(g.name_ids, g.content)):
            ids[i, j, :len(name)] = torch.tensor(name)
            token_mask[i, j, :len(name)] = True
            content[i, j, :len(name)] = torch.tensor(words)
        boxes[i, :len(g.name_ids)] = g.boxes
        relations[i, :len(g.relations)] = g.relations
        relation_mask[i, :len(g.relations)] = True
    return SceneGraphBatch(ids, token_mask, content, token_mask.any(-1), boxes, relations, relation_mask)


EMPTY_ENCODED = EncodedGraph((), (), torch.zeros(0, 4), torch.zeros(0, 3, dtype=torch.long))


@dataclass
class SceneGraphCollate:
    """collate(items) plus batch["scene_graph"]: each item's image's graph (by its group's image path;
    an image without one gets an empty graph). A class, so DataLoader workers can pickle it."""

    collate: Callable[[list], dict]
    graphs: dict[Path, EncodedGraph] = field(default_factory=dict)

    def __call__(self, items: list) -> dict:
        batch = self.collate(items)
        batch["scene_graph"] = batch_scene_graphs([self.graphs.get(Path(group.image_path), EMPTY_ENCODED)
                                                   for _, group in items])
        return batch
