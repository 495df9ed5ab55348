"""Task retrieval's data: captioned images as row-aligned pairs; with data.feature_cache, each pair also
carries the frozen encoders' cached outputs (vlfuse.data.cached_inputs)."""

from __future__ import annotations

from ...config import Config
from ...data.caption_dataset import CaptionDataset, collate_pairs
from ...data.cached_inputs import cached_inputs
from ...models.retrieval import RetrievalModel


def retrieval_items(config: Config, model: RetrievalModel, sets: list[CaptionDataset | None], progress: bool):
    """(the datasets the loop reads, their collate): pairs, with the caches' outputs where the config sets them."""
    return cached_inputs(config, model.text_encoder, sets, collate_pairs, progress)
