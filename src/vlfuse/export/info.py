"""What marks a folder as exported (export.json), read without loading any runtime."""

from __future__ import annotations

from pathlib import Path

EXPORT_INFO = "export.json"  # what marks a folder as exported: its graph, precision and inputs


def is_exported(path: str | Path) -> bool:
    """Whether `path` is a folder written by `vlfuse export` (it holds export.json)."""
    return (Path(path) / EXPORT_INFO).is_file()
