"""Task retrieval's data: captioned images as row-aligned pairs; with data.feature_cache over a frozen
text encoder, each caption also carries its cached states."""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from ...config import Config
from ...data.caption_dataset import CaptionDataset, collate_pairs
from ...data.feature_cache import text_feature_states
from ...models.retrieval import RetrievalModel


class WithTextStates(Dataset):
    """A CaptionDataset whose items also carry their caption's cached frozen text states [length, H]."""

    def __init__(self, dataset: CaptionDataset, states: list[torch.Tensor]):
        self.dataset, self.states = dataset, states

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, list[int], torch.Tensor]:
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        image, ids = self.dataset[key]
        return image, ids, self.states[self.dataset.caption_for(i, epoch)]


def collate_pairs_with_states(items: list) -> dict:
    """collate_pairs, plus the captions' cached states padded like their ids (text_states [B, L, H])."""
    batch = collate_pairs([item[:2] for item in items])
    batch["text_states"] = pad_sequence([item[2] for item in items], batch_first=True)
    return batch


def with_text_states(config: Config, model: RetrievalModel, sets: list[CaptionDataset | None], progress: bool):
    """`sets` as they are, or (data.feature_cache over a frozen text encoder) carrying cached text states."""
    present = [d for d in sets if d is not None]
    states = text_feature_states(config, model.text_encoder, [ids for d in present for ids in d.caption_ids],
                                 progress)
    if states is None:
        return sets, collate_pairs
    out, start = [], 0
    for dataset in sets:
        if dataset is not None:
            out.append(WithTextStates(dataset, states[start: start + len(dataset.caption_ids)]))
            start += len(dataset.caption_ids)
        else:
            out.append(None)
    return out, collate_pairs_with_states
