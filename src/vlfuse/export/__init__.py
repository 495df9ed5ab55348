"""Export a trained model for onnxruntime (vlfuse export), and run the exported folder.

Light to import: torch.onnx, onnx and onnxruntime load only when an export runs or an exported
folder is loaded.
"""

from __future__ import annotations

from .info import EXPORT_INFO, is_exported

__all__ = ["EXPORT_INFO", "export_model", "is_exported", "load_exported"]


def export_model(model_dir, out_dir=None, *, int8: bool = False, fmt: str = "onnx") -> dict:
    """See vlfuse.export.exporter.export_model."""
    from .exporter import export_model as run

    return run(model_dir, out_dir, int8=int8, fmt=fmt)


def load_exported(folder, expected: type | None = None, what: str = ""):
    """An exported folder as a Predictor or RetrievalEncoder (vlfuse.load does this for you); with
    `expected`, any other kind is a one-line DataError saying the folder holds no `what`."""
    from ..errors import DataError
    from .runtime import load_exported as run

    loaded = run(folder)
    if expected is not None and not isinstance(loaded, expected):
        raise DataError(f"holds an exported {loaded.config.task} model, {what}", path=folder)
    return loaded
