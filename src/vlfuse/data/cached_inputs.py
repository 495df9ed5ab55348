"""Datasets and batches that carry the frozen encoders' cached outputs (vlfuse.data.feature_cache).

Every task that reads the caches goes through `cached_inputs`: with data.feature_cache over a frozen
pretrained text encoder, each item also carries the cached states of the texts it holds (a caption, or
all the questions of an image), and each batch has them padded like its token ids (`text_states`
[B, L, H]); with data.feature_cache, the batch's images are the image encoder's cached features
(`image_features`). The model then runs only the encoders' trainable parts (models.inputs).

A dataset opts in with two members: `text_ids` (every text's token ids, in one fixed order) and
`text_rows(key)` (the positions in that order of the texts item `key` holds, in batch order).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from .feature_cache import caches_text, feature_collate, text_feature_states


class WithTextStates(Dataset):
    """A dataset whose items also carry the cached frozen states [length, H] of their texts (a list)."""

    def __init__(self, dataset: Dataset, states: list[torch.Tensor]):
        self.dataset, self.states = dataset, states

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> tuple:
        return (*self.dataset[key], [self.states[row] for row in self.dataset.text_rows(key)])


class TextStatesCollate:
    """`collate` of the items without their states, plus `text_states`: the states of every text of the
    batch, in the order of its token ids and padded like them. A class: picklable for DataLoader workers."""

    def __init__(self, collate: Callable[[list], dict]):
        self.collate = collate

    def __call__(self, items: list) -> dict:
        batch = self.collate([item[:-1] for item in items])
        batch["text_states"] = pad_sequence([s for item in items for s in item[-1]], batch_first=True)
        return batch


def with_text_states(config, text_encoder: torch.nn.Module, sets: list, collate: Callable[[list], dict],
                     progress: bool = True) -> tuple[list, Callable[[list], dict]]:
    """(`sets`, `collate`) as they are, or (data.feature_cache over a frozen text encoder) carrying the
    texts' cached states, computed for the texts the cache lacks. A None in `sets` stays None."""
    if not caches_text(config, text_encoder):
        return sets, collate
    texts = [d.text_ids if d is not None else [] for d in sets]
    states = text_feature_states(config, text_encoder, [ids for part in texts for ids in part], progress)
    out, start = [], 0
    for dataset, part in zip(sets, texts):
        out.append(None if dataset is None else WithTextStates(dataset, states[start: start + len(part)]))
        start += len(part)
    return out, TextStatesCollate(collate)


def cached_inputs(config, text_encoder: torch.nn.Module, sets: list, collate: Callable[[list], dict],
                  progress: bool = True) -> tuple[list, Callable[[list], dict]]:
    """`sets` and `collate` reading every cache the config sets: the text states (`with_text_states`),
    and the images' cached features renamed to the batch's `image_features` (data.feature_cache; the
    datasets were built with `feature_loader`'s image_loader)."""
    sets, collate = with_text_states(config, text_encoder, sets, collate, progress)
    return sets, feature_collate(config, collate)
