"""Retrieval index: a trained retrieval model's image embeddings in FAISS (exact, IVF or HNSW).

FAISS is an optional dependency (`pip install 'vlfuse[serve]'`); it is imported when an index is made or read.
"""

from .api import add_to_index, build_index, image_sources, open_index
from .encoder import RetrievalEncoder
from .fingerprint import model_fingerprint
from .store import Hit, ImageIndex, Item, ModelMismatchError
from .vectors import KINDS, IndexSettings

__all__ = ["KINDS", "Hit", "ImageIndex", "IndexSettings", "Item", "ModelMismatchError", "RetrievalEncoder",
           "add_to_index", "build_index", "image_sources", "model_fingerprint", "open_index"]
