"""Config format `webdataset`: tar shards (see vlfuse.data.shards) as VQASamples or CaptionSamples."""

from __future__ import annotations

from pathlib import Path

from ..shard_read import read_shard_samples
from .common import ReadResult


def read_webdataset(path: Path, images: Path | None = None, *, on_bad_sample: str = "error") -> ReadResult:
    """`path`: a folder of shards, one .tar, or a brace pattern; images are read from inside the tars."""
    return read_shard_samples(path, images, on_bad_sample)
