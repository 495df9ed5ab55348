"""Lightning checkpoints stored as safetensors, so resuming never unpickles anything.

Lightning's checkpoint is a nested structure of dicts, lists, numbers, strings and tensors. Tensors
go into the safetensors body; the rest becomes a JSON skeleton in the file's metadata, with each
tensor replaced by a reference. Anything else is refused when saving, not guessed at.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import CheckpointIO

from ..errors import DataError

_META_KEY = "vlfuse_checkpoint"


class CheckpointWriteError(DataError):
    """A checkpoint could not be written (disk full, no permission); the previous one is intact."""


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": name}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: _encode(v, tensors) for k, v in obj.items()}}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__tuple__" if isinstance(obj, tuple) else "__list__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in a safetensors checkpoint")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if not isinstance(obj, dict):
        return obj
    (kind, value), = obj.items()
    if kind == "__tensor__":
        return tensors[value]
    if kind == "__dict__":
        return {k: _decode(v, tensors) for k, v in value.items()}
    if kind == "__items__":
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value}
    items = [_decode(v, tensors) for v in value]
    return tuple(items) if kind == "__tuple__" else items


def save_checkpoint_file(checkpoint: dict, path: str | Path) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(checkpoint, tensors)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(skeleton)})
        os.replace(tmp, path)  # a kill or a full disk mid-write leaves the previous checkpoint intact
    except Exception as exc:  # OSError, or safetensors' own error wrapping one (e.g. no space left)
        tmp.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        kept = "; the previous checkpoint is kept" if path.is_file() else ""
        raise CheckpointWriteError(f"could not write the checkpoint: {reason}{kept}", path=path) from None


def load_checkpoint_file(path: str | Path, map_location: Any = None) -> dict:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError("checkpoint not found", path=path)
    device = str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise DataError(f"not a readable safetensors checkpoint ({exc})", path=path) from None
    if _META_KEY not in meta:
        raise DataError("safetensors file has no vlfuse checkpoint metadata", path=path)
    try:
        return _decode(json.loads(meta[_META_KEY]), tensors)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"damaged vlfuse checkpoint metadata ({type(exc).__name__}: {exc})", path=path) from None


class SafetensorsCheckpointIO(CheckpointIO):
    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        save_checkpoint_file(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint_file(path, map_location)

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)
