"""Config -> samples: reads one split in the configured format, paths resolved against data.root.

Which keys of `data.<split>` each format reads (`images` is the image folder, optional where the
published layout fixes it):

  vqa_v2   questions, annotations (optional: test-style without), images
  jsonl    path (.jsonl or .csv table), images (root for relative image paths)
  gqa      questions (a file, or a folder of shards), images
  vgqa     questions (question_answers.json), images (may hold VG_100K/, VG_100K_2/)
  nlvr     path (e.g. dev.json), images (default: images/ beside it)
  nlvr2    path (e.g. dev.json), images
  snli_ve  path (e.g. snli_ve_dev.jsonl), images (the Flickr30k images)

Caption formats (task retrieval), whose readers return CaptionSamples:

  coco_captions  annotations (captions_*.json), images (default: the split's folder beside annotations/)
  karpathy       path (dataset_coco.json / dataset_flickr30k.json), images (the folder that holds each
                 entry's filepath/filename); split train reads Karpathy's train + restval, val and test their own

Dialogue formats (task dialogue), whose reader returns DialogSamples:

  visdial  path (VisDial v1.0 JSON), images (default: images/<split>/ beside the JSON's folder)
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..config import DataConfig
from ..errors import ConfigError
from .formats.common import ReadResult

SPLITS = ("train", "val", "test")

# format -> (module in vlfuse.data.formats, reader function, the SplitConfig keys it reads besides images).
# Modules are imported on use, so a run loads only its own format's reader.
READERS = {
    "vqa_v2": ("vqav2", "read_vqa_v2", ("questions", "annotations")),
    "jsonl": ("jsonl", "read_vqa_table", ("path",)),
    "gqa": ("gqa", "read_gqa", ("questions",)),
    "vgqa": ("vgqa", "read_vgqa", ("questions",)),
    "nlvr": ("nlvr", "read_nlvr", ("path",)),
    "nlvr2": ("nlvr2", "read_nlvr2", ("path",)),
    "snli_ve": ("snli_ve", "read_snli_ve", ("path",)),
    "coco_captions": ("coco", "read_coco_captions", ("annotations",)),
    "karpathy": ("karpathy", "read_karpathy_split", ("path",)),
    "visdial": ("visdial", "read_visdial", ("path",)),
    "webdataset": ("webdataset", "read_webdataset", ("path",)),  # tar shards of either kind (data/shards.py)
}
# Which task reads each format: question formats give VQASamples, caption formats CaptionSamples.
CAPTION_FORMATS = ("coco_captions", "karpathy")
CAPTION_TASKS = ("retrieval", "captioning", "pretrain", "generation")  # the tasks that read caption formats
DIALOG_FORMATS = ("visdial",)  # DialogSamples, for task dialogue
_FILE_KEYS = ("questions", "annotations", "path")


def _resolve(root: str, value: str | None) -> Path | None:
    return None if value is None else Path(root).expanduser() / Path(value).expanduser()


def check_task_format(task: str, data: DataConfig) -> None:
    """A format holds questions (task vqa) or captions (task retrieval); refuse the other pairing."""
    if data.format == "webdataset":  # shards hold questions or captions: they say which
        from .shards import check_shard_task

        return check_shard_task(task, data)
    if (task == "dialogue") != (data.format in DIALOG_FORMATS):  # dialogues serve task dialogue alone
        raise ConfigError(f"config key 'data.format' is {data.format}, but task {task} reads "
                          + ("dialogues: set data.format to visdial" if task == "dialogue" else
                             "no dialogues: set task: dialogue, or another format"))
    captions = data.format in CAPTION_FORMATS
    if task in CAPTION_TASKS and not captions:
        raise ConfigError(f"config key 'data.format' is {data.format}, a question format, but task {task} "
                          f"reads captions: set data.format to {' or '.join(CAPTION_FORMATS)}")
    if task not in CAPTION_TASKS and task != "matching" and captions:  # matching reads either (see data.matching)
        raise ConfigError(f"config key 'data.format' is {data.format}, a caption format, but task {task} reads "
                          f"questions: set task: {' or '.join(CAPTION_TASKS)}, or a question format")


def read_split(data: DataConfig, split: str) -> ReadResult:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    spec = getattr(data, split)
    if spec is None and data.format == "karpathy" and data.train.path:
        spec = data.train  # one Karpathy file holds every split: an unset one is read from train's file
    if spec is None:
        raise ConfigError(f"config key 'data.{split}' is not set")
    module, function, keys = READERS[data.format]
    for key in _FILE_KEYS:
        # A key the format ignores is almost always a mistake (a copied vqa_v2 block, a typo'd format).
        if key not in keys and getattr(spec, key) is not None:
            raise ConfigError(f"config key 'data.{split}.{key}' is not used by format {data.format} "
                              f"(it reads {', '.join(keys)} and images); remove it or set it to null")
    main = keys[0]
    if getattr(spec, main) is None:
        raise ConfigError(f"config key 'data.{split}.{main}' is required for format {data.format}")
    files = [_resolve(data.root, getattr(spec, key)) for key in keys]
    reader = getattr(importlib.import_module(f"{__package__}.formats.{module}"), function)
    if data.format == "karpathy":  # one file holds every split: the reader picks this one's images
        return reader(*files, _resolve(data.root, spec.images), split=split, on_bad_sample=data.on_bad_sample)
    return reader(*files, _resolve(data.root, spec.images), on_bad_sample=data.on_bad_sample)
