"""Image-caption pairs for retrieval: each image decoded once, with every caption written for it.

Training takes one caption per image per batch, so the other images of the batch are the
negatives (no image appears twice in a batch). The caption an image brings cycles through its
captions from epoch to epoch, decided by (image, epoch) alone: a resumed run and a run with
loader workers see the same pairs. So is whether a training image comes flipped left-right
(`mirror`, an augmentation), except with a caption that names a side, which would then be wrong.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..progress import track
from .formats.common import SkipLog
from .images import image_to_tensor, load_image
from .records import CaptionSample
from .tokenizer import encode_ids, pad_ids
from .vqa_dataset import EpochSampler


SIDE_WORDS = re.compile(r"\b(left|right)\b", re.IGNORECASE)  # a caption that says these fits one way round


class CaptionDataset(Dataset):
    """Item (i, epoch) = (image i as uint8 [3, S, S], token ids of its caption for that epoch).

    Images without captions are left out (counted in `uncaptioned`); a bad image is recorded in
    `skip_log` (or raises, under on_bad_sample=error), its captions dropped with it. Every caption
    is also available flat, for evaluation: `caption_ids[t]`, `captions[t]` and `text_to_image[t]`.
    """

    def __init__(self, samples: list[CaptionSample], tokenizer, image_size: int, max_length: int,
                 skip_log: SkipLog, progress: bool = True, description: str = "Loading images", image_loader=None):
        # image_loader(path) -> the item's image tensor (the feature cache's returns cached features).
        load = image_loader or (lambda path: image_to_tensor(load_image(path), image_size))
        self.uncaptioned = sum(not s.captions for s in samples)
        kept, images = [], []
        for sample in track([s for s in samples if s.captions], description, enabled=progress):
            try:
                images.append(load(sample.image_path))
            except DataError as exc:
                skip_log.add(exc, samples=len(sample.captions))
                continue
            kept.append(sample)
        self.samples: list[CaptionSample] = kept
        self.images = torch.stack(images) if images else torch.empty(0, 3, image_size, image_size, dtype=torch.uint8)
        self.captions: list[str] = [c for s in kept for c in s.captions]
        self.text_to_image = torch.tensor([i for i, s in enumerate(kept) for _ in s.captions], dtype=torch.long)
        self.caption_ids: list[list[int]] = encode_ids(tokenizer, self.captions, max_length) if self.captions else []
        starts = [0]
        for s in kept:
            starts.append(starts[-1] + len(s.captions))
        self.first_caption = starts  # image i's captions are caption_ids[starts[i]:starts[i + 1]]
        self.mirror_share, self.mirrored = 0.0, None

    def mirror(self, share: float, image_loader=None) -> None:
        """Hand out each image flipped left-right in about `share` of the epochs, unless the caption it
        brings names a side. image_loader(path): the flipped image's item (the feature cache's mirrored
        features); None flips the pixels."""
        self.mirror_share = share
        self.mirrored = torch.stack([image_loader(s.image_path) for s in self.samples]) \
            if image_loader is not None and share > 0 and self.samples else None
        self.names_side = [bool(SIDE_WORDS.search(c)) for c in self.captions]

    def image_for(self, i: int, epoch: int | None, captions) -> torch.Tensor:
        """Image i as training `epoch` hands it out beside `captions` (flat indices): flipped or not
        (`mirror`). Epoch None (an item asked for by index alone, as evaluation does): as it is."""
        if not self.mirror_share or epoch is None or any(self.names_side[c] for c in captions) or \
                random.Random(f"mirror {i} {epoch}").random() >= self.mirror_share:
            return self.images[i]
        return self.images[i].flip(-1) if self.mirrored is None else self.mirrored[i]

    @property
    def image_paths(self) -> list[Path]:
        return [Path(s.image_path) for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def caption_for(self, i: int, epoch: int) -> int:
        """Which caption (a flat index) image i brings in `epoch`: each in turn, from a per-image start."""
        first, count = self.first_caption[i], self.first_caption[i + 1] - self.first_caption[i]
        return first + (i + epoch) % count

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, list[int]]:
        i, epoch = key if isinstance(key, tuple) else (key, None)
        caption = self.caption_for(i, epoch or 0)
        return self.image_for(i, epoch, [caption]), self.caption_ids[caption]

    # The texts the frozen text encoder's cache serves (vlfuse.data.cached_inputs): every caption, and
    # the one an item brings.
    @property
    def text_ids(self) -> list[list[int]]:
        return self.caption_ids

    def text_rows(self, key: int | tuple[int, int]) -> list[int]:
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        return [self.caption_for(i, epoch)]


class PairSampler(EpochSampler):
    """EpochSampler that hands the dataset (image index, epoch), so it can pick that epoch's caption (and
    whether the photo comes flipped)."""

    def __iter__(self):
        epoch = self.epoch
        return ((i, epoch) for i in super().__iter__())


def collate_pairs(items: list[tuple[torch.Tensor, list[int]]]) -> dict:
    """Row i of the batch: image i and one of its captions (images [B, 3, S, S] uint8, padded ids)."""
    input_ids, attention_mask = pad_ids([ids for _, ids in items])
    return {"images": torch.stack([image for image, _ in items]), "input_ids": input_ids,
            "attention_mask": attention_mask}
