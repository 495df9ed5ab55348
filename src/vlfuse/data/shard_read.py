"""Reading shards as a dataset split (config `data.format: webdataset`): records back from tar samples."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError, DataError
from .formats.common import ReadResult, SkipLog
from .records import CaptionSample, VQASample
from .tar import IMAGE_EXTENSIONS, MANIFEST, ShardSample, iter_shard, list_shards

def _records_from(sample: ShardSample) -> list[VQASample] | CaptionSample:
    """A shard sample -> its VQASamples (a "questions" list) or its CaptionSample ("captions", or KEY.txt)."""
    ext = sample.image_extension
    if ext is None:
        raise DataError(f"sample {sample.key!r} has no image member (.{', .'.join(IMAGE_EXTENSIONS)})",
                        path=sample.shard)
    record = sample.json()
    image_path = sample.shard / f"{sample.key}.{ext}"
    image_id = record.get("image_id", sample.key)
    where = f"member {sample.key + '.json'!r}"
    if "questions" in record:
        questions = record["questions"]
        if not isinstance(questions, list) or not all(isinstance(q, dict) and isinstance(q.get("question"), str)
                                                      for q in questions):
            raise DataError(f"{where}: 'questions' must be a list of objects with a 'question' string",
                            path=sample.shard)
        return [VQASample(q.get("question_id", f"{sample.key}-{i}"), image_id, image_path, q["question"],
                          q.get("answer"), tuple(q.get("answers") or ()), q.get("question_type", "unknown"),
                          q.get("answer_type", "unknown"), q.get("extra") or {})
                for i, q in enumerate(questions)]
    captions = record.get("captions")
    if captions is None:
        text = sample.text()
        captions = [text] if text else []
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise DataError(f"{where}: 'captions' must be a list of strings", path=sample.shard)
    return CaptionSample(image_id, image_path, tuple(captions), record.get("split", ""), record.get("extra") or {})


def read_shard_samples(location: str | Path, images: Path | None = None, on_bad_sample: str = "error"
                       ) -> ReadResult:
    """Config format `webdataset`: every sample's records, image paths pointing into the shards.

    VQA shards give VQASamples, caption shards (ours, or open_clip's KEY.jpg + KEY.txt) give
    CaptionSamples; `images` is not used (the images are in the shards).
    """
    log = SkipLog(on_bad_sample)
    samples: list = []
    for shard in list_shards(location):
        try:
            for sample in iter_shard(shard, read_images=False):
                try:
                    records = _records_from(sample)
                except DataError as exc:
                    log.add(exc)
                    continue
                samples.extend(records if isinstance(records, list) else [records])
        except DataError as exc:  # the shard itself is damaged: keep what was read before the damage
            log.add(exc)
    kinds = {type(s) for s in samples}
    if len(kinds) > 1:
        raise DataError("shards mix question samples and caption samples: one split holds one kind",
                        path=location)
    return ReadResult(samples, log)


def shard_kind(location: str | Path) -> str:
    """"vqa" or "captions": from shards.json when the folder has one, else from the first sample."""
    location = Path(location).expanduser()
    manifest = location / MANIFEST if location.is_dir() else None
    if manifest is not None and manifest.is_file():
        try:
            return json.loads(manifest.read_text(encoding="utf-8"))["kind"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"not a valid shard manifest ({exc})", path=manifest) from None
    for shard in list_shards(location):
        for sample in iter_shard(shard, read_images=False):
            return "vqa" if "questions" in sample.json() else "captions"
    raise DataError("the shards hold no samples", path=location)


SHARD_TASKS = {"vqa": "vqa", "retrieval": "captions"}  # task -> the kind of shards it reads


def check_shard_task(task: str, data) -> None:
    """Format webdataset: question shards serve task vqa, caption shards task retrieval."""
    if task not in SHARD_TASKS:
        raise ConfigError(f"config key 'data.format' is webdataset, which serves task vqa (question shards) and "
                          f"retrieval (caption shards), not {task}")
    for split in ("train", "val", "test"):
        spec = getattr(data, split)
        if spec is None or spec.path is None:
            continue
        location = Path(data.root).expanduser() / Path(spec.path).expanduser()
        kind = shard_kind(location)
        if kind != SHARD_TASKS[task]:
            raise ConfigError(f"config key 'data.{split}.path' ({location}) holds {kind} shards, but task {task} "
                              f"reads {SHARD_TASKS[task]}")

