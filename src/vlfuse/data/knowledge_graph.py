"""A knowledge graph the user brings, joined to each image's scene graph for graph fusion.

Format: triples (head, relation, tail), entities and relations named by text, one per line:

  JSONL  {"head": "red", "relation": "has_weight", "tail": "heavy"}
  CSV    a header row naming head, relation, tail (other columns are ignored), then one triple a row

Linking: a knowledge-graph entity stands for a scene entity when every word of its name is a word
of the scene entity's name (case-insensitive): "red" -> "red circle", "traffic light" -> "traffic
light". Question words reach knowledge-graph entities as they reach scene entities (the model's
`mentions` edges: a question word that is a word of the entity's name).

Joining (`join_knowledge_graph`), per image: the entities linked to the scene's entities plus those
within `hops` triples of them (either direction; at most MAX_KG_ENTITIES) become extra entities of
that image's graph, named by their text like scene entities and placed nowhere (an empty box: no
`depicts` edge). The triples among them become relations, and each link a `kg_link` relation
(knowledge-graph entity -> scene entity). With `facts` (data.knowledge_facts) each of those triples is
also a node of its own, named by its words and said of each scene entity its head stands for ("red
has_weight heavy" and a red circle: "red circle has weight heavy", kg_link to the circle and to heavy),
so a fact is a node's own name, reached from the question in one `mentions` hop, rather than an edge
that message passing must follow.

Relation ids: the built-in RELATIONS keep theirs, `kg_link` comes next, then the graph's own relation
names in the order the file first uses them (a name equal to a built-in one shares its id). The
vocabulary is saved with the model (knowledge_graph.json in the model directory: the triples too),
so `vlfuse eval` / `predict` read the same graph with the same ids; a graph swapped in at
evaluation (`--set data.knowledge_graph=...`) must use only relations the model knows.

Per-sample graphs (`data.knowledge_graph: per_sample`): each question's row names its own graph file in
its `knowledge_graph` field (formats/jsonl.py checks it), so facts can differ from image to image and
only the graph tells them. The questions about one image name the same graph (the fusion graph is
built per image). The model's relation vocabulary is then every training graph's relations, and its
saved knowledge_graph.json holds that vocabulary without triples.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from ..errors import ConfigError, DataError
from .formats.common import iter_jsonl, read_json, read_text
from .formats.fields import Where, as_list, as_object, required_text
from .scene_graph import RELATION_ID, RELATIONS, SceneGraph

KG_LINK = "kg_link"  # a knowledge-graph entity -> the scene entity whose name holds its words
KG_FILE = "knowledge_graph.json"  # the copy in a model directory
MAX_KG_ENTITIES = 64  # per image: a large graph contributes its nearest entities, not all of them
MAX_KG_FACTS = 64  # per image, with data.knowledge_facts: fact nodes past these are left out
FIELDS = ("head", "relation", "tail")
PER_SAMPLE = "per_sample"  # data.knowledge_graph: each row's `knowledge_graph` field names its graph
SAMPLE_FIELD = "knowledge_graph"
NO_BOX = (0.0, 0.0, 0.0, 0.0)  # zero area: overlaps no image token, so no `depicts` edge


@dataclass(frozen=True)
class KnowledgeGraph:
    """Triples (head, relation, tail) and the relation names past the built-ins, in id order."""

    triples: tuple[tuple[str, str, str], ...]
    vocabulary: tuple[str, ...]
    source: str = ""

    @cached_property
    def entities(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e for h, _, t in self.triples for e in (h, t)))

    @cached_property
    def by_word(self) -> dict[str, list[str]]:
        """word -> the entities whose names hold it (in entity order): linking looks up, not scans."""
        index: dict[str, list[str]] = {}
        for entity in self.entities:
            for word in words(entity):
                index.setdefault(word, []).append(entity)
        return index

    @cached_property
    def adjacent(self) -> dict[str, list[tuple[str, str, str]]]:
        """entity -> the triples it is the head or tail of, in file order."""
        index: dict[str, list[tuple[str, str, str]]] = {}
        for triple in self.triples:
            index.setdefault(triple[0], []).append(triple)
            if triple[2] != triple[0]:
                index.setdefault(triple[2], []).append(triple)
        return index

    def relation_ids(self) -> dict[str, int]:
        ids = {**RELATION_ID, KG_LINK: len(RELATIONS)}
        for name in self.vocabulary:
            ids.setdefault(name, len(ids))
        return ids


def make_knowledge_graph(triples, source: str = "") -> KnowledgeGraph:
    """Triples deduplicated in file order, the vocabulary the relations they first use."""
    triples = tuple(dict.fromkeys(tuple(t) for t in triples))
    known = set(RELATION_ID) | {KG_LINK}
    return KnowledgeGraph(triples, tuple(dict.fromkeys(r for _, r, _ in triples if r not in known)), source)


def relation_ids(knowledge: KnowledgeGraph | None) -> dict[str, int]:
    """The relation ids of a model trained with `knowledge` (the built-ins alone without one)."""
    return RELATION_ID if knowledge is None else knowledge.relation_ids()


# --------------------------------------------------------------------------- reading

def _triple(record, where: Where) -> tuple[str, str, str]:
    """(head, relation, tail) of one record, each non-empty text with inner whitespace made single."""
    record = as_object(record, where)
    return tuple(" ".join(required_text(record, key, where).split()) for key in FIELDS)


def _jsonl_triples(path: Path) -> Iterator[tuple[str, str, str]]:
    for line, record in iter_jsonl(path):
        yield _triple(record, Where(path, line))


def _csv_triples(path: Path) -> Iterator[tuple[str, str, str]]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    try:
        missing = [key for key in FIELDS if key not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"CSV header lacks column(s) {', '.join(map(repr, missing))} (expected head,relation,"
                            "tail)", path=path, line=1, field=missing[0])
        for row in reader:
            if None in row:  # DictReader files surplus cells under the key None
                raise DataError("row has more cells than the header", path=path, line=reader.line_num)
            yield _triple(row, Where(path, reader.line_num))
    except csv.Error as exc:
        raise DataError(f"malformed CSV: {exc}", path=path, line=reader.line_num) from None


def _saved_triples(path: Path) -> tuple[list, tuple[str, ...] | None]:
    """(triples, vocabulary) of a knowledge_graph.json a model directory holds."""
    doc = as_object(read_json(path), Where(path))
    where = Where(path, field="triples")
    triples = [_triple(dict(zip(FIELDS, as_list(t, where.at(i)))), where.at(i))
               for i, t in enumerate(as_list(doc.get("triples"), where))]
    vocabulary = doc.get("relations")
    return triples, None if vocabulary is None else tuple(str(r) for r in as_list(vocabulary, Where(path, field="relations")))


def read_knowledge_graph(path: str | Path) -> KnowledgeGraph:
    """A knowledge graph from `.jsonl` or `.csv` triples, or a model directory's knowledge_graph.json."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv", ".json"):
        raise DataError(f"unsupported knowledge graph format {suffix!r} (expected .jsonl or .csv triples)", path=path)
    if not path.is_file():
        raise DataError("knowledge graph file not found (config key data.knowledge_graph)", path=path)
    vocabulary = None
    if suffix == ".json":
        triples, vocabulary = _saved_triples(path)
    else:
        triples = list((_jsonl_triples if suffix == ".jsonl" else _csv_triples)(path))
    if not triples:
        raise DataError("the knowledge graph holds no triples", path=path)
    graph = make_knowledge_graph(triples, str(path))
    return graph if vocabulary is None else with_vocabulary(graph, vocabulary, path)


def with_vocabulary(graph: KnowledgeGraph, vocabulary: tuple[str, ...], path) -> KnowledgeGraph:
    """`graph` read with a model's relation ids; a relation the model never saw is refused."""
    unknown = [r for r in graph.vocabulary if r not in vocabulary]
    if unknown:
        raise DataError(f"relation {unknown[0]!r} is not one the model was trained with ({', '.join(vocabulary)})",
                        path=path, field="relation")
    return replace(graph, vocabulary=tuple(vocabulary))


# --------------------------------------------------------------------------- linking and joining

def words(name: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", name.lower()))


def links(entity: str, scene_names: tuple[str, ...]) -> list[int]:
    """Indices of the scene entities `entity` stands for: every word of its name is one of theirs."""
    own = words(entity)
    return [i for i, name in enumerate(scene_names) if own and own <= words(name)]


def _linked(graph: KnowledgeGraph, scene_names: tuple[str, ...]) -> list[tuple[str, int]]:
    """(entity, scene index) of every link, as `links` finds them, through the graph's word index."""
    order = {entity: k for k, entity in enumerate(graph.entities)}
    found = []
    for i, name in enumerate(scene_names):
        own = words(name)
        candidates = {e for word in own for e in graph.by_word.get(word, ())}
        found += [(e, i) for e in candidates if words(e) <= own]
    return sorted(found, key=lambda pair: (order[pair[0]], pair[1]))


def _neighbourhood(graph: KnowledgeGraph, seeds: list[str], hops: int) -> list[str]:
    """`seeds`, then the entities within `hops` triples of them (breadth first, file order), capped."""
    chosen, frontier = dict.fromkeys(seeds), list(seeds)
    for _ in range(hops):
        frontier = [n for e in frontier for h, _, t in graph.adjacent.get(e, ()) for n in (h, t) if n not in chosen]
        chosen.update(dict.fromkeys(frontier))
    return list(chosen)[:MAX_KG_ENTITIES]


def fact_name(subject: str, relation: str, tail: str) -> str:
    """A fact as words, the name of its node: ("red circle", "has_weight", "heavy") -> "red circle has weight heavy"."""
    return f"{subject} {relation.replace('_', ' ')} {tail}"


def _facts(scene: SceneGraph, among: list, linked: list, index: dict) -> list[tuple[str, tuple[int, ...]]]:
    """(name, the nodes it links to) of each fact node: a triple whose head stands for scene entities is
    said of each of them ("red has_weight heavy" -> "red circle has weight heavy", linked to the red circle
    and to heavy), any other triple as it is (linked to its head and tail); at most MAX_KG_FACTS."""
    instances: dict[str, list[int]] = {}
    for entity, i in linked:
        instances.setdefault(entity, []).append(i)
    facts = []
    for h, r, t in among:
        subjects = [(scene.names[i], i) for i in instances.get(h, ())] or [(h, index[h])]
        facts += [(fact_name(name, r, t), (node, index[t])) for name, node in subjects]
    return facts[:MAX_KG_FACTS]


def join_knowledge_graph(scene: SceneGraph, graph: KnowledgeGraph, hops: int = 1, facts: bool = False) -> SceneGraph:
    """`scene` plus the knowledge-graph entities it links to and their `hops`-neighbourhood: entities
    after the scene's own, the triples among them, a kg_link from each linked entity to its scene entity.
    facts: the triples are also nodes of their own, named by their words and said of the scene entities
    their heads stand for (`_facts`), so that a question word naming an object reaches what the graph
    says of it in one hop."""
    linked = _linked(graph, scene.names)
    chosen = _neighbourhood(graph, list(dict.fromkeys(e for e, _ in linked)), hops)
    index = {entity: len(scene.names) + k for k, entity in enumerate(chosen)}
    among = [(h, r, t) for e in chosen for h, r, t in graph.adjacent.get(e, ()) if h == e and t in index]  # once each
    triples = tuple((index[h], r, index[t]) for h, r, t in among)
    link_triples = tuple((index[e], KG_LINK, i) for e, i in linked if e in index)
    names = tuple(chosen)
    if facts:
        found = _facts(scene, among, [(e, i) for e, i in linked if e in index], index)
        first = len(scene.names) + len(chosen)
        names += tuple(name for name, _ in found)
        link_triples += tuple((first + k, KG_LINK, end) for k, (_, ends) in enumerate(found) for end in ends)
    return SceneGraph(scene.names + names, scene.boxes + (NO_BOX,) * len(names),
                      scene.relations + triples + link_triples)


def join_scene_graphs(graphs: dict, graph: KnowledgeGraph | None, hops: int, per_image: dict | None = None,
                      facts: bool = False) -> dict:
    """Each image's scene graph joined with its knowledge graph: `per_image`'s (by image path, per_sample
    data) where given, else `graph`; unchanged without one (a per_sample model's `graph` holds no triples)."""
    if per_image:
        return {path: join_knowledge_graph(scene, per_image[path], hops, facts) if path in per_image else scene
                for path, scene in graphs.items()}
    if graph is None or not graph.triples:
        return graphs
    return {path: join_knowledge_graph(scene, graph, hops, facts) for path, scene in graphs.items()}


def encode_for_model(graphs: dict, saved, per_image: dict | None = None) -> dict:
    """A saved model's view of scene graphs: joined with its knowledge graph (or each image's, `per_image`),
    encoded with its ids."""
    from .scene_graph import encode_scene_graphs

    knowledge = getattr(saved, "knowledge_graph", None)
    data = saved.config.data
    joined = join_scene_graphs(graphs, knowledge, data.knowledge_hops, per_image, data.knowledge_facts)
    return encode_scene_graphs(joined, saved.tokenizer, relation_ids=relation_ids(knowledge))


# --------------------------------------------------------------------------- config and model directories

def configured_path(data) -> Path:
    return Path(data.root).expanduser() / data.knowledge_graph


def check_relations(config, graph: KnowledgeGraph) -> None:
    """model.fusion.relations must hold every relation id the joined graphs use."""
    needed = len(graph.relation_ids())
    relations = (config.model.fusion or {}).get("relations", 16)
    if relations < needed:
        raise ConfigError(f"config key 'model.fusion.relations' is {relations}, but the scene graphs joined with "
                          f"data.knowledge_graph use {needed} relations ({len(RELATIONS)} built-in, kg_link, "
                          f"{len(graph.vocabulary)} of the graph's): set it to at least {needed}")


def training_knowledge_graph(config, **reads) -> tuple[KnowledgeGraph | None, dict]:
    """(the model's graph, each image's graph) of the split reads (train=..., val=...): data.knowledge_graph
    read (a path under data.root) and checked against the fusion, with {} per image; per_sample, a graph of
    the relations every image's graph uses and those graphs by image path; (None, {}) when unset."""
    if not config.data.knowledge_graph:
        return None, {}
    per_image = {}
    if config.data.knowledge_graph == PER_SAMPLE:
        for split, read in reads.items():
            if read is not None:
                table = Path(config.data.root).expanduser() / getattr(config.data, split).path
                per_image.update(sample_knowledge_graphs(read.samples, table))
        graph = vocabulary_graph(per_image.values())
    else:
        graph = read_knowledge_graph(configured_path(config.data))
    check_relations(config, graph)
    return graph, per_image


def vocabulary_graph(graphs, vocabulary: tuple[str, ...] | None = None) -> KnowledgeGraph:
    """A per_sample model's knowledge graph: no triples, the relations `graphs` use in first-use order
    (or a saved `vocabulary`)."""
    if vocabulary is None:
        vocabulary = tuple(dict.fromkeys(r for g in graphs for r in g.vocabulary))
    return KnowledgeGraph((), vocabulary, PER_SAMPLE)


def image_graph_files(samples, table) -> dict[Path, Path]:
    """image path -> the graph file its questions' `knowledge_graph` field names (one per image)."""
    files: dict[Path, Path] = {}
    for sample in samples:
        named = sample.extra.get(SAMPLE_FIELD)
        where = f"{SAMPLE_FIELD} (question {sample.question_id})"
        if named is None:
            raise DataError("no knowledge graph named (data.knowledge_graph is per_sample: each row names its "
                            "graph file)", path=table, field=where)
        image = Path(sample.image_path)
        if files.setdefault(image, Path(named)) != Path(named):
            raise DataError(f"names {named}, but another question about image {image.name} names "
                            f"{files[image]}: the questions about one image share its graph", path=table, field=where)
    return files


def sample_knowledge_graphs(samples, table, vocabulary: tuple[str, ...] | None = None) -> dict[Path, KnowledgeGraph]:
    """per_sample: each image's knowledge graph (each file read once); `vocabulary`, a trained model's
    relations, refuses a graph that uses another."""
    read: dict[Path, KnowledgeGraph] = {}
    graphs = {}
    for image, path in image_graph_files(samples, table).items():
        if path not in read:
            graph = read_knowledge_graph(path)
            read[path] = graph if vocabulary is None else with_vocabulary(graph, vocabulary, path)
        graphs[image] = read[path]
    return graphs


def save_knowledge_graph(model_dir: str | Path, graph: KnowledgeGraph | None) -> None:
    """The triples and relation vocabulary as JSON in the model directory (never pickled)."""
    if graph is None:
        return
    rows = ",\n".join("  " + json.dumps(list(t), ensure_ascii=False) for t in graph.triples)  # one triple a line
    head = json.dumps({"source": graph.source, "relations": list(graph.vocabulary)}, ensure_ascii=False)[:-1]
    (Path(model_dir) / KG_FILE).write_text(f'{head}, "triples": [\n{rows}\n]}}\n', encoding="utf-8")


def load_saved_knowledge_graph(model_dir: str | Path, config) -> KnowledgeGraph | None:
    """The knowledge graph a model directory was trained with (per_sample: its relation vocabulary alone);
    None for a model trained without one."""
    if not config.data.knowledge_graph:
        return None
    path = Path(model_dir) / KG_FILE
    if not path.is_file():
        raise DataError(f"the model was trained with data.knowledge_graph but {KG_FILE} is missing", path=path)
    if config.data.knowledge_graph == PER_SAMPLE:
        return vocabulary_graph((), _saved_triples(path)[1] or ())
    return read_knowledge_graph(path)


def evaluation_knowledge_graph(saved, config):
    """`saved` with the knowledge graph `config` names when it is another than the one the model was trained
    with (e.g. --set data.knowledge_graph=shuffled.jsonl), read with the model's relation ids; null: none."""
    wanted, trained = config.data.knowledge_graph, saved.config.data.knowledge_graph
    if wanted == trained:
        return saved
    if saved.knowledge_graph is None:
        raise ConfigError("config key 'data.knowledge_graph': this model was trained without a knowledge graph and "
                          "cannot read one: leave the key out (null)")
    if not wanted:  # an ablation: the scene graphs alone
        print("note: evaluating without the knowledge graph the model was trained with", file=sys.stderr)
        return replace(saved, knowledge_graph=None)
    if wanted == PER_SAMPLE:  # each image's own graph, read with the model's relation ids
        print("note: evaluating with each sample's knowledge graph, not the one the model was trained with",
              file=sys.stderr)
        return replace(saved, knowledge_graph=vocabulary_graph((), saved.knowledge_graph.vocabulary))
    path = configured_path(config.data)
    graph = with_vocabulary(read_knowledge_graph(path), saved.knowledge_graph.vocabulary, path)
    print(f"note: evaluating with the knowledge graph {path}, not the one the model was trained with",
          file=sys.stderr)
    return replace(saved, knowledge_graph=graph)


def image_knowledge_graphs(saved, config, split: str, samples) -> dict | None:
    """Evaluating with data.knowledge_graph: per_sample, each image's graph as its rows name it, read with
    the model's relation ids; None otherwise (the model's own graph, or none)."""
    if config.data.knowledge_graph != PER_SAMPLE or saved.knowledge_graph is None:
        return None
    table = Path(config.data.root).expanduser() / getattr(config.data, split).path
    return sample_knowledge_graphs(samples, table, saved.knowledge_graph.vocabulary)


def knowledge_graph_summary(graph: KnowledgeGraph, graphs: dict, scenes: dict, per_image: dict) -> dict:
    """For run.json: the graph's size (per_sample: how many graphs, triples on average) and how many of
    its entities and fact nodes (data.knowledge_facts) joined each image, on average."""
    entities, facts = [], []
    for path, joined in graphs.items():
        own = set((per_image.get(path) or graph).entities)
        added = joined.names[len(scenes[path].names):]
        facts.append(sum(name not in own for name in added))  # a fact node's name is no entity's
        entities.append(len(added) - facts[-1])
    sizes = {"triples": len(graph.triples), "entities": len(graph.entities)}
    if per_image:
        distinct = {id(g): g for g in per_image.values()}.values()
        sizes = {"graphs": len(distinct), "triples": round(sum(len(g.triples) for g in distinct) / len(distinct), 2),
                 "entities": round(sum(len(g.entities) for g in distinct) / len(distinct), 2)}
    return {"source": graph.source, **sizes, "relations": list(graph.vocabulary),
            "entities_per_image": round(sum(entities) / max(len(entities), 1), 2),
            "facts_per_image": round(sum(facts) / max(len(facts), 1), 2)}
