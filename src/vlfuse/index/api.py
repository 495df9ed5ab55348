"""The index's Python API, the same as `vlfuse index build | add | search`.

    from vlfuse.index import build_index, open_index
    index = build_index("runs/retrieval_shapes/model", images="photos/", out="runs/photos_index", kind="hnsw")
    hits = open_index("runs/photos_index", "runs/retrieval_shapes/model").search_texts(["a red circle"], k=10)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .encoder import RetrievalEncoder
from .store import ImageIndex
from .vectors import IndexSettings


def _encoder(model) -> RetrievalEncoder:
    """`model` itself, or the encoder of the saved or exported model folder it names."""
    from ..predict import load_encoder

    return model if isinstance(model, RetrievalEncoder) else load_encoder(model)


def image_sources(images: str | Path | None = None, data: str | Path | None = None, split: str = "train",
                  set_: list[str] | None = None) -> list[tuple[str | int, Path]]:
    """(id, path) of every image in a folder (id = path inside it) or in one split of a config's data
    section (id = the dataset's image id; each image once, however many questions or captions it has)."""
    if (images is None) == (data is None):
        raise ConfigError("give the images to index as an image folder or as a data config, exactly one of them")
    if images is not None:
        from ..data.formats.image_folder import read_image_folder

        return [(s.image_id, Path(s.image_path)) for s in read_image_folder(images, on_bad_sample="skip").samples]
    from ..config import load_config
    from ..data.loading import read_split

    read = read_split(load_config(data, set_ or []).data, split)
    seen, sources = set(), []
    for sample in read.samples:
        path = Path(sample.image_path)
        if path not in seen:
            seen.add(path)
            sources.append((sample.image_id, path))
    if not sources:
        raise DataError(f"no images in split {split!r} of this config", path=data)
    return sources


def build_index(model, images: str | Path | None = None, data: str | Path | None = None, out: str | Path | None = None,
                kind: str = "flat", split: str = "train", settings: IndexSettings | None = None, batch: int = 64,
                progress: bool = False, set_: list[str] | None = None) -> ImageIndex:
    """Embed every image of `images` (a folder) or `data` (a config, one split) with the retrieval model
    `model` (a model directory or a RetrievalEncoder); save to `out` when given."""
    encoder = _encoder(model)
    settings = settings or IndexSettings(kind=kind)
    sources = image_sources(images, data, split, set_)
    empty = np.zeros((0, encoder.dim), np.float32)
    # IVF learns its cells from the vectors themselves: embed into an exact index first, then move them
    first = ImageIndex.empty(encoder, settings if settings.kind != "ivf" else IndexSettings("flat"), empty)
    first.add_images(sources, batch, progress)
    if not len(first):
        raise DataError("no readable images to index" + (f" ({first.skipped.summary()})" if first.skipped.count
                                                         else ""), path=images or data)
    index = first
    if settings.kind == "ivf":
        vectors = first.index.reconstruct_n(0, len(first))
        index = ImageIndex.empty(encoder, settings, vectors)
        index.add_vectors(vectors, first.items)
        index.skipped = first.skipped
    if out is not None:
        index.save(out)
    return index


def open_index(index_dir: str | Path, model=None) -> ImageIndex:
    """Load an index; with `model` (a directory or encoder) it can be searched and grown, after the
    fingerprint check."""
    return ImageIndex.load(index_dir, None if model is None else _encoder(model))


def add_to_index(index_dir: str | Path, model, images: str | Path | None = None, data: str | Path | None = None,
                 split: str = "train", batch: int = 64, progress: bool = False) -> tuple[ImageIndex, int]:
    """Add the images of a folder (or a config's split) to a saved index, with its own model; saves it."""
    index = open_index(index_dir, model)
    added = index.add_images(image_sources(images, data, split), batch, progress)
    index.save(index_dir)
    return index, added
