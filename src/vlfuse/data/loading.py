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
  v7w      path (dataset_v7w_telling.json), images (default: images/ beside it); one file holds every
           split, each run's split reads the entries whose `split` names it (multiple choice: task vqa_mc)

Caption formats (task retrieval), whose readers return CaptionSamples:

  coco_captions  annotations (captions_*.json), images (default: the split's folder beside annotations/)
  karpathy       path (dataset_coco.json / dataset_flickr30k.json), images (the folder that holds each
                 entry's filepath/filename); split train reads Karpathy's train + restval, val and test their own

Dialogue formats (task dialogue), whose reader returns DialogSamples:

  visdial  path (VisDial v1.0 JSON), images (default: images/<split>/ beside the JSON's folder)
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Callable, NamedTuple

from ..config import DataConfig
from ..errors import ConfigError
from .formats import coco, gqa, jsonl, karpathy, nlvr, nlvr2, snli_ve, v7w, vgqa, visdial, vqav2, webdataset
from .formats.common import ReadResult

SPLITS = ("train", "val", "test")


class FormatReader(NamedTuple):
    module: ModuleType  # in vlfuse.data.formats; its docstring describes the format
    read: Callable[..., ReadResult]
    keys: tuple[str, ...]  # the SplitConfig keys it reads besides images


# format -> its reader: an explicit table, so a reader (and a tool) can follow every name.
READERS = {
    "vqa_v2": FormatReader(vqav2, vqav2.read_vqa_v2, ("questions", "annotations")),
    "jsonl": FormatReader(jsonl, jsonl.read_vqa_table, ("path",)),
    "gqa": FormatReader(gqa, gqa.read_gqa, ("questions",)),
    "vgqa": FormatReader(vgqa, vgqa.read_vgqa, ("questions",)),
    "nlvr": FormatReader(nlvr, nlvr.read_nlvr, ("path",)),
    "nlvr2": FormatReader(nlvr2, nlvr2.read_nlvr2, ("path",)),
    "snli_ve": FormatReader(snli_ve, snli_ve.read_snli_ve, ("path",)),
    "v7w": FormatReader(v7w, v7w.read_v7w, ("path",)),
    "coco_captions": FormatReader(coco, coco.read_coco_captions, ("annotations",)),
    "karpathy": FormatReader(karpathy, karpathy.read_karpathy_split, ("path",)),
    "visdial": FormatReader(visdial, visdial.read_visdial, ("path",)),
    "webdataset": FormatReader(webdataset, webdataset.read_webdataset, ("path",)),  # tar shards of either kind
}
# Which task reads each format: question formats give VQASamples, caption formats CaptionSamples.
CAPTION_FORMATS = ("coco_captions", "karpathy")
CAPTION_TASKS = ("retrieval", "captioning", "pretrain", "generation")  # the tasks that read caption formats
DIALOG_FORMATS = ("visdial",)  # DialogSamples, for task dialogue
_FILE_KEYS = ("questions", "annotations", "path")
ONE_FILE_FORMATS = ("karpathy", "v7w")  # one file holds every split; the reader takes the split's name


def _resolve(root: str, value: str | None) -> Path | None:
    return None if value is None else Path(root).expanduser() / Path(value).expanduser()


def check_task_format(task: str, data: DataConfig) -> None:
    """A format holds questions (task vqa) or captions (task retrieval); refuse the other pairing."""
    if data.format == "webdataset":  # shards hold questions or captions: they say which
        from .shard_read import check_shard_task

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
    if spec is None and data.format in ONE_FILE_FORMATS and data.train.path:
        spec = data.train  # one file holds every split: an unset one is read from train's file
    if spec is None:
        raise ConfigError(f"config key 'data.{split}' is not set")
    _, reader, keys = READERS[data.format]
    for key in _FILE_KEYS:
        # A key the format ignores is almost always a mistake (a copied vqa_v2 block, a typo'd format).
        if key not in keys and getattr(spec, key) is not None:
            raise ConfigError(f"config key 'data.{split}.{key}' is not used by format {data.format} "
                              f"(it reads {', '.join(keys)} and images); remove it or set it to null")
    main = keys[0]
    if getattr(spec, main) is None:
        raise ConfigError(f"config key 'data.{split}.{main}' is required for format {data.format}")
    files = [_resolve(data.root, getattr(spec, key)) for key in keys]
    if data.format in ONE_FILE_FORMATS:  # one file holds every split: the reader picks this one's images
        return reader(*files, _resolve(data.root, spec.images), split=split, on_bad_sample=data.on_bad_sample)
    read = reader(*files, _resolve(data.root, spec.images), on_bad_sample=data.on_bad_sample)
    if data.exclude_answers:
        read.samples = drop_answers(read.samples, data.exclude_answers, split)
    return read


def drop_answers(samples: list, answers: list[str], split: str) -> list:
    """`samples` less those whose answer is in `answers` (data.exclude_answers); an answer that no
    training question has is an error, since it is most likely a typo that would hold nothing out."""
    from .answers import normalize_answer

    held_out = {normalize_answer(a) for a in answers}
    if "" in held_out:
        raise ConfigError("config key 'data.exclude_answers' holds an empty answer")
    answer_of = [getattr(s, "answer", None) for s in samples]  # captions and dialogues have none
    kept = [s for s, a in zip(samples, answer_of) if a is None or normalize_answer(a) not in held_out]
    if split == "train":
        present = {normalize_answer(a) for a in answer_of if a is not None}
        missing = sorted(held_out - present)
        if missing:
            raise ConfigError(f"config key 'data.exclude_answers': no training question has the answer "
                              f"{missing[0]!r}")
    return kept
