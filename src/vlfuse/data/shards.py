"""WebDataset-style tar shards: write them from any configured split, read them back, stream them.

The layout is the webdataset / open_clip (img2dataset) convention: a shard is a plain tar named
`PREFIX-000000.tar`; a sample is the run of adjacent members sharing a key (the member name up to
the first dot of its base name): `KEY.jpg` (or .png, .webp, ... : the original bytes, never
re-encoded), `KEY.json` (the sample's record) and, for captions, `KEY.txt` (the first caption, which
is what open_clip reads). Shards written here hold one image per sample with all of its questions
(`{"questions": [...]}`, task vqa) or all of its captions (`{"captions": [...]}`, task retrieval),
and `shards.json` beside them lists each shard's sample count.

Three ways in, one module each (tar access itself is data/tar.py):
- `write_shards` / `vlfuse data shard CONFIG --split train --out DIR` (data/shard_write.py): a
  configured split -> shards.
- `read_shard_samples` (data/shard_read.py; config `data.format: webdataset`, `data.<split>.path`:
  a folder of shards, one .tar, or a brace pattern `train-{000000..000009}.tar`): VQASamples or CaptionSamples whose
  image paths point *inside* the tars (`.../train-000000.tar/000000017.jpg`); `images.load_image`
  reads those members directly, so every dataset, the feature cache and evaluation work unchanged.
- `ShardStream` (data/shard_stream.py): an IterableDataset that streams the shards through
  DataLoader workers, split across workers and processes (rank / world size) so that no sample repeats, with a shuffle buffer.
  Training streams through it with `data.stream: true` (task vqa: data/vqa_stream.py).

Only `tarfile`: nothing is extracted to disk, so member names cannot escape anywhere.
"""

from .shard_read import SHARD_TASKS, check_shard_task, read_shard_samples, shard_kind
from .shard_stream import ShardStream
from .shard_write import write_shards
from .tar import (IMAGE_EXTENSIONS, MANIFEST, ShardSample, expand_braces, iter_shard, list_shards, read_member,
                  split_key, tar_member)

__all__ = ["IMAGE_EXTENSIONS", "MANIFEST", "SHARD_TASKS", "ShardSample", "ShardStream", "check_shard_task",
           "expand_braces", "iter_shard", "list_shards", "read_member", "read_shard_samples", "shard_kind",
           "split_key", "tar_member", "write_shards"]
