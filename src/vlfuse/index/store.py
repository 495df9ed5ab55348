"""ImageIndex: image embeddings of one retrieval model in FAISS, with what each vector is, on disk.

An index directory holds `vectors.faiss` (FAISS's own format), `items.jsonl` (one {"id", "path"}
a vector, in FAISS's order) and `index.json` (kind and settings, dimension, and the fingerprint of
the model that made the vectors). Searching or adding with any other model is refused: its
embeddings live in another space, and the results would be silently meaningless.

A model trained with a query bank (retrieval.querybank) ranks text -> image by the bank-normalised
score, cos(q, c) - bias_c with bias_c = log sum_b exp(beta cos(b, c)) / beta over the bank's captions
(tasks/retrieval/querybank.py), as its evaluation does. The index keeps that exactly in inner-product
form: each image is stored as [c, -bias_c] and a text query searches with [q, 1] (an image query with
[q, 0], a plain cosine); items.jsonl keeps each bias, and index.json the beta.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.formats.common import SkipLog
from ..errors import ConfigError, DataError
from ..models.retrieval import CANNOT_RERANK
from ..progress import track
from . import vectors as fv
from .encoder import RetrievalEncoder
from .vectors import IndexSettings

VECTORS, ITEMS, META = "vectors.faiss", "items.jsonl", "index.json"
FORMAT = 1


class ModelMismatchError(DataError):
    """The model given is not the one that built the index."""


@dataclass(frozen=True)
class Item:
    id: str | int
    path: str  # absolute, so a server started anywhere can show the image
    bias: float = 0.0  # the image's query-bank term (0 without a bank)


@dataclass
class Hit:
    rank: int  # 1 = best
    position: int  # the vector's position in the index (what /images/{position} serves)
    id: str | int
    path: str
    score: float  # what the ranking used: similarity (- the bank term), + the weighted re-ranking score
    similarity: float  # cosine of query and image embeddings
    match: float | None = None  # the re-ranker's score, ITM log-odds or tokens' (re-ranked text queries only)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class ImageIndex:
    recorded_folders: tuple[str, ...] = ()  # the image folders index.json named when loaded
    loaded_items = 0  # how many items came from disk (those added since are new)

    def __init__(self, index, items: list[Item], settings: IndexSettings, fingerprint: str, model_dir: str,
                 encoder: RetrievalEncoder | None = None, skipped: SkipLog | None = None,
                 querybank_beta: float | None = None):
        self.index, self.items, self.settings = index, items, settings
        self.querybank_beta = querybank_beta  # None: plain cosine ranking
        self.fingerprint, self.model_dir = fingerprint, model_dir
        self.encoder = encoder
        self.skipped = skipped or SkipLog("skip")  # bad images met by the last build / add
        self._paths = {item.path for item in items}
        self._ids = {item.id: item.path for item in items}

    # ------------------------------------------------------------------ creating and growing

    @classmethod
    def empty(cls, encoder: RetrievalEncoder, settings: IndexSettings, training: np.ndarray) -> "ImageIndex":
        banked = encoder.querybank is not None
        index = fv.create(settings, encoder.dim + banked, training)
        return cls(index, [], settings, encoder.fingerprint, str(encoder.model_dir or ""), encoder,
                   querybank_beta=encoder.config.retrieval.querybank_beta if banked else None)

    def add_vectors(self, vectors: np.ndarray, items: list[Item]) -> None:
        if len(vectors) != len(items):
            raise ValueError(f"{len(vectors)} vectors for {len(items)} items")
        self._check_new_ids(items)
        if len(items):
            self.index.add(fv.as_matrix(vectors, self.index.d))
            self.items.extend(items)
            self._paths.update(item.path for item in items)
            self._ids.update((item.id, item.path) for item in items)

    def add_images(self, sources: list[tuple[str | int, Path]], batch: int = 64, progress: bool = False) -> int:
        """Embed and add images given as (id, path); paths already indexed are left out. Returns how many
        were added; unreadable images are skipped and recorded in `self.skipped`."""
        encoder = self._encoder()
        self.skipped = SkipLog("skip")
        by_path: dict[Path, str | int] = {}  # each path once, its first id
        for image_id, path in sources:
            by_path.setdefault(Path(path).resolve(), image_id)
        fresh = [(i, p) for p, i in by_path.items() if str(p) not in self._paths]
        self._check_new_ids([Item(i, str(p)) for i, p in fresh])  # before any work: all added or none
        added = 0
        starts = range(0, len(fresh), batch)
        for start in track(starts, "Embedding images", total=len(starts), enabled=progress):
            tensors, items = [], []
            for image_id, path in fresh[start: start + batch]:
                try:
                    tensors.append(encoder.image_tensor(path))
                except DataError as error:
                    self.skipped.add(error)
                    continue
                items.append(Item(image_id, str(path)))
            if items:
                self.add_vectors(*self._stored(encoder.embed_image_tensors(torch.stack(tensors)), items))
                added += len(items)
        return added

    def _stored(self, vectors: np.ndarray, items: list[Item]) -> tuple[np.ndarray, list[Item]]:
        """Image embeddings as the index stores them: with a query bank, [c, -bias] and the bias in the item."""
        if self.querybank_beta is None:
            return vectors, items
        encoder = self._encoder()
        if encoder.querybank is None:
            raise ConfigError("this index ranks with its model's query bank, but the model given has none "
                              "(querybank.safetensors, retrieval.querybank): add with the model that built it")
        bias = encoder.image_bias(vectors)
        return (np.hstack([vectors, -bias[:, None]]),
                [Item(item.id, item.path, float(b)) for item, b in zip(items, bias)])

    def _check_new_ids(self, items: list[Item]) -> None:
        """DataError on an image id already indexed or given twice: a hit names its image by id."""
        new: dict = {}
        for item in items:
            first = self._ids.get(item.id, new.get(item.id))
            if first is not None:
                raise DataError(f"image id {item.id!r} is given twice, for {first} and {item.path}: each image "
                                "in an index needs its own id (a folder's images are named by their path inside "
                                "it: index a folder above both)")
            new[item.id] = item.path

    # ------------------------------------------------------------------ searching

    def __len__(self) -> int:
        return len(self.items)

    @property
    def dim(self) -> int:
        return self.index.d

    def search_vectors(self, queries: np.ndarray, k: int = 10, query: str = "text") -> list[list[Hit]]:
        """The k best images for each query embedding [Q, E], `query` "text" or "image" (an image query
        ignores the query bank: it is not the kind of query the bank holds)."""
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        if query not in ("text", "image"):
            raise ValueError(f"query must be 'text' or 'image', got {query!r}")
        banked = self.querybank_beta is not None and query == "text"
        if self.querybank_beta is not None:
            queries = np.hstack([fv.as_matrix(queries), np.full((len(queries), 1), float(banked), np.float32)])
        scores, positions = fv.search(self.index, queries, k)
        return [[Hit(r + 1, int(p), self.items[p].id, self.items[p].path, float(s),
                     float(s + self.items[p].bias) if banked else float(s))
                 for r, (s, p) in enumerate(zip(row_scores, row_positions)) if p >= 0]
                for row_scores, row_positions in zip(scores, positions)]

    def search_texts(self, texts: list[str], k: int = 10, rerank: bool = False) -> list[list[Hit]]:
        """Text -> image: each text's k best images; `rerank` re-scores them with the model's re-ranker (LAVIS)."""
        encoder = self._encoder()
        if rerank and not encoder.can_rerank:
            raise ConfigError(f"{CANNOT_RERANK}: search without rerank")
        hits = self.search_vectors(encoder.embed_texts(texts), k, "text")
        return [self.rerank(text, row) for text, row in zip(texts, hits)] if rerank else hits

    def search_images(self, images: list, k: int = 10) -> list[list[Hit]]:
        """Image -> image: each image's k nearest indexed images (paths, bytes or PIL images)."""
        return self.search_vectors(self._encoder().embed_images(images), k, "image")

    def rerank(self, text: str, hits: list[Hit]) -> list[Hit]:
        """Each candidate (its image re-read from its path) re-scored as its evaluation does, best first: first
        stage + the text queries' re-ranking weight x the re-ranker's score, where the first stage is the logit
        beta (cos - bias) with a query bank, else the learned scale x cos; kept in the similarity's units
        (divided by beta or the scale), so a re-ranked score reads like a plain one."""
        if not hits:
            return hits
        encoder = self._encoder()
        images = torch.stack([encoder.image_tensor(hit.path) for hit in hits])
        similarity, scores = encoder.match(images, text)
        unit = self.querybank_beta if self.querybank_beta is not None else encoder.logit_scale
        weight = encoder.config.retrieval.text_query_weight / unit
        for hit, s, m in zip(hits, similarity, scores):
            hit.similarity, hit.match = float(s), float(m)
            hit.score = float(s - self.items[hit.position].bias + weight * m)
        hits = sorted(hits, key=lambda h: -h.score)
        for rank, hit in enumerate(hits, 1):
            hit.rank = rank
        return hits

    # ------------------------------------------------------------------ the model

    def _encoder(self) -> RetrievalEncoder:
        if self.encoder is None:
            raise ConfigError("this index was opened without its model: open_index(INDEX_DIR, MODEL_DIR)")
        return self.encoder

    def attach(self, encoder: RetrievalEncoder, where: str | Path = "") -> "ImageIndex":
        """Use `encoder` for queries and additions, after checking it is the model that built the index."""
        if encoder.fingerprint != self.fingerprint:
            raise ModelMismatchError(
                f"the index was built by another model (fingerprint {self.fingerprint[:12]}, "
                f"from {self.model_dir or 'unknown'}); {encoder.model_dir or 'the model given'} has fingerprint "
                f"{encoder.fingerprint[:12]}: its embeddings are not comparable. Search with the model that built "
                "the index, or rebuild it: vlfuse index build MODEL_DIR --images DIR --out INDEX_DIR",
                path=where or None)
        self.encoder = encoder
        return self

    def image_folders(self) -> list[str]:
        """The folders of the indexed images as they were built and added: what a server may show. Read from
        index.json, not from items.jsonl, so an edited items line cannot widen it."""
        added = {str(Path(item.path).parent) for item in self.items[self.loaded_items:]}
        return sorted(set(self.recorded_folders) | added)

    # ------------------------------------------------------------------ disk

    def save(self, out_dir: str | Path) -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        fv.write(self.index, out_dir / VECTORS)
        banked = self.querybank_beta is not None
        rows = ({"id": i.id, "path": i.path} | ({"bias": i.bias} if banked else {}) for i in self.items)
        (out_dir / ITEMS).write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                                     encoding="utf-8")
        meta = {"format": FORMAT, "kind": self.settings.kind, "settings": self.settings.as_dict(), "dim": self.dim,
                "count": len(self.items), "model_fingerprint": self.fingerprint, "model_dir": self.model_dir,
                "folders": self.image_folders(), "querybank_beta": self.querybank_beta}
        (out_dir / META).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return out_dir

    @classmethod
    def load(cls, index_dir: str | Path, encoder: RetrievalEncoder | None = None) -> "ImageIndex":
        index_dir = Path(index_dir)
        for name in (META, ITEMS, VECTORS):
            if not (index_dir / name).is_file():
                raise DataError(f"not a vlfuse index directory: {name} is missing", path=index_dir)
        meta = _read_json(index_dir / META)
        if meta.get("format") != FORMAT:
            raise DataError(f"index format {meta.get('format')!r} is not the supported {FORMAT}", path=index_dir / META)
        try:
            settings = IndexSettings(**meta["settings"])
            fingerprint, model_dir = str(meta["model_fingerprint"]), str(meta.get("model_dir", ""))
            beta = None if meta.get("querybank_beta") is None else float(meta["querybank_beta"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed index metadata ({exc})", path=index_dir / META) from None
        items = [_item(line, n, index_dir / ITEMS) for n, line in
                 enumerate((index_dir / ITEMS).read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
        try:
            index = fv.read(index_dir / VECTORS)
        except RuntimeError as exc:
            raise DataError(f"cannot read the FAISS index ({str(exc).splitlines()[0]})", path=index_dir / VECTORS) \
                from None
        if index.ntotal != len(items):
            raise DataError(f"{index.ntotal} vectors but {len(items)} items: the index directory is inconsistent",
                            path=index_dir)
        fv.apply_search_settings(index, settings)
        found = cls(index, items, settings, fingerprint, model_dir, querybank_beta=beta)
        # an index written before folders were recorded: the folders of its items
        found.recorded_folders = tuple(meta.get("folders") or {str(Path(i.path).parent) for i in items})
        found.loaded_items = len(items)
        return found if encoder is None else found.attach(encoder, index_dir)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read index metadata ({exc})", path=path) from None
    if not isinstance(data, dict):
        raise DataError("index metadata must be a JSON object", path=path)
    return data


def _item(line: str, number: int, path: Path) -> Item:
    try:
        record = json.loads(line)
        return Item(record["id"], str(record["path"]), float(record.get("bias", 0.0)))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"malformed item ({exc})", path=path, line=number) from None
