"""The FAISS part: exact, IVF and HNSW inner-product indexes over unit vectors, and their settings.

flat  IndexFlatIP: exact search, the reference the other two are measured against.
ivf   IndexIVFFlat (inner product): k-means cells, search visits `nprobe` of `nlist`; needs training
      on the first vectors added, so later additions land in cells learnt from those.
hnsw  IndexHNSWFlat (inner product): a navigable small-world graph, `m` links a node,
      `ef_construction` / `ef_search` candidate lists when building / searching; no training.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError, MissingDependencyError

KINDS = ("flat", "ivf", "hnsw")


def import_faiss():
    try:
        import faiss
    except ImportError:
        raise MissingDependencyError("the retrieval index needs FAISS: pip install 'vlfuse[serve]' "
                                     "(or pip install faiss-cpu)") from None
    return faiss


@dataclass
class IndexSettings:
    """kind and its knobs; None picks a default from the number of vectors at build time."""

    kind: str = "flat"
    nlist: int | None = None  # ivf: cells (default ~4 sqrt(n), at least 39 training vectors a cell)
    nprobe: int | None = None  # ivf: cells searched (default sqrt(nlist), rounded up)
    m: int = 32  # hnsw: links per node
    ef_construction: int = 80
    ef_search: int = 64

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"index kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    def as_dict(self) -> dict:
        return asdict(self)


def default_nlist(n: int) -> int:
    # FAISS wants ~39+ training points a centroid; 4 sqrt(n) is its usual rule of thumb
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def as_matrix(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or (dim is not None and vectors.shape[1] != dim):
        raise ConfigError(f"expected vectors of shape [n, {dim or 'dim'}], got {list(vectors.shape)}")
    return vectors


def create(settings: IndexSettings, dim: int, training: np.ndarray):
    """An empty FAISS index of `settings.kind` (IVF trained on `training`); settings' defaults filled in."""
    faiss = import_faiss()
    if settings.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if settings.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.ef_construction
        apply_search_settings(index, settings)
        return index
    if len(training) == 0:
        raise ConfigError("an ivf index learns its cells from the first vectors: build it with at least one image")
    settings.nlist = settings.nlist or default_nlist(len(training))
    if settings.nlist > len(training):
        raise ConfigError(f"ivf nlist={settings.nlist} needs at least that many vectors to train on, got "
                          f"{len(training)}")
    settings.nprobe = settings.nprobe or math.ceil(math.sqrt(settings.nlist))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, settings.nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.min_points_per_centroid = 1  # a small collection is fine: no warning for it
    index.train(as_matrix(training, dim))
    apply_search_settings(index, settings)
    return index


def apply_search_settings(index, settings: IndexSettings) -> None:
    """Search-time knobs are not all kept in FAISS's file (efSearch is), so set them after every load."""
    if settings.kind == "ivf":
        index.nprobe = settings.nprobe
    elif settings.kind == "hnsw":
        index.hnsw.efSearch = max(settings.ef_search, 1)


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q, k'], positions [Q, k']) with k' = min(k, vectors held); position -1 = no result."""
    k = min(k, index.ntotal)
    if k < 1:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    return index.search(as_matrix(queries, index.d), k)


def write(index, path) -> None:
    import_faiss().write_index(index, str(path))


def read(path):
    # FAISS's own binary format: arrays and parameters, nothing executable
    return import_faiss().read_index(str(path))
