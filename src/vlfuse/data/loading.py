"""Config -> samples: reads one split in the configured format, paths resolved against data.root."""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig, SplitConfig
from ..errors import ConfigError
from .formats.common import ReadResult


def _resolve(root: str, value: str | None) -> Path | None:
    return None if value is None else Path(root).expanduser() / Path(value).expanduser()


def read_split(data: DataConfig, split: str) -> ReadResult:
    spec: SplitConfig | None = getattr(data, split)
    if spec is None:
        raise ConfigError(f"config key 'data.{split}' is not set")
    if data.format == "vqa_v2":
        if spec.questions is None:
            raise ConfigError(f"config key 'data.{split}.questions' is required for format vqa_v2")
        from .formats.vqav2 import read_vqa_v2

        return read_vqa_v2(_resolve(data.root, spec.questions), _resolve(data.root, spec.annotations),
                           _resolve(data.root, spec.images), on_bad_sample=data.on_bad_sample)
    if spec.path is None:
        raise ConfigError(f"config key 'data.{split}.path' is required for format {data.format}")
    from .formats.jsonl import read_vqa_table

    return read_vqa_table(_resolve(data.root, spec.path), _resolve(data.root, spec.images),
                          on_bad_sample=data.on_bad_sample)
