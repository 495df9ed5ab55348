"""A model directory's fingerprint: what an index records so that it is never searched with
embeddings from another model (vectors of two models live in unrelated spaces)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import DataError
from ..models.saved import CONFIG, TOKENIZER, WEIGHTS

# The files that decide what an embedding means: the weights, the config that builds the model,
# and the tokenizer that turns text into ids.
FINGERPRINTED = (WEIGHTS, CONFIG, TOKENIZER)
_CHUNK = 1 << 20


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the weights, config and tokenizer files of `model_dir` (hex, 64 characters)."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    for name in FINGERPRINTED:
        path = model_dir / name
        if not path.is_file():
            raise DataError(f"not a vlfuse model directory: {name} is missing", path=model_dir)
        digest.update(name.encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
