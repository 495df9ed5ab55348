"""Reader for Karpathy's split files (`dataset_coco.json`, `dataset_flickr30k.json`, `dataset_flickr8k.json`).

`{"dataset", "images": [{"filepath"?, "filename", "split", "sentences": [{"raw", "tokens", ...}],
"imgid", "cocoid"?, "sentids"}]}`. COCO's entries carry `filepath` ("val2014") and `cocoid`; the
Flickr files have neither, so the image is `image_root/filename` and its id is the file name's stem
(as the Flickr30k sentence files name it). Splits are "train", "val", "test" and, in COCO,
"restval" (the 30k val2014 images most papers add to train: pass `splits=("train", "restval")`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from vlfuse.data.formats.common import ReadResult, SkipLog, read_json
from vlfuse.data.formats.fields import (Where, as_list, as_object, extra_fields, image_file, image_folder, is_int,
                                        plain_name, require, required_text)
from vlfuse.data.records import CaptionSample
from vlfuse.errors import DataError

_USED = frozenset({"filepath", "filename", "split", "sentences", "cocoid"})


def read_karpathy(path: str | Path, image_root: str | Path | None = None, *,
                  splits: str | Iterable[str] | None = None, on_bad_sample: str = "error",
                  check_images: bool = True) -> ReadResult:
    """Read the images of `splits` (default: all) as CaptionSamples with their raw sentences.

    `image_root` (default: the file's folder) holds `filepath/filename`. An image with a missing
    file, or a sentence without `raw` text, is a bad sample.
    """
    skipped = SkipLog(on_bad_sample)
    path = Path(path)
    wanted = {splits} if isinstance(splits, str) else None if splits is None else set(splits)
    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DataError("expected a JSON object with an 'images' list (Karpathy split format)", path=path,
                        field="images")
    root = image_folder(Path(image_root) if image_root is not None else path.parent, check_images)
    samples, seen = [], set()
    for index, entry in enumerate(doc["images"]):
        where = Where(path, field=f"images[{index}]")
        try:
            sample = _sample(entry, where, root, wanted, check_images)
            if sample is None:
                continue
            if sample.image_id in seen:
                raise where.error(f"duplicate image {sample.image_id!r}")
            seen.add(sample.image_id)
            samples.append(sample)
        except DataError as error:
            skipped.add(error)
    return ReadResult(samples=samples, skipped=skipped)


def _sample(entry: object, where: Where, root: Path, wanted: set | None, check_images: bool) -> CaptionSample | None:
    """The image's sample, or None when its split is not wanted (checked first: no stat for it)."""
    entry = as_object(entry, where)
    split = required_text(entry, "split", where)
    if wanted is not None and split not in wanted:
        return None
    name = plain_name(require(entry, "filename", where), where.at("filename"), "filename")
    folder = root
    if entry.get("filepath") is not None:
        folder = root / plain_name(entry["filepath"], where.at("filepath"), "filepath")
    sentences = as_list(require(entry, "sentences", where), where.at("sentences"))
    captions = tuple(required_text(as_object(s, where.at("sentences").at(i)), "raw", where.at("sentences").at(i),
                                   "sentence")
                     for i, s in enumerate(sentences))
    cocoid = entry.get("cocoid")
    if cocoid is not None and not is_int(cocoid):
        raise where.at("cocoid").error(f"cocoid must be an integer, got {type(cocoid).__name__}")
    return CaptionSample(image_id=cocoid if cocoid is not None else Path(name).stem,
                         image_path=image_file(folder / name, where.at("filename"), check_images),
                         captions=captions, split=split, extra=extra_fields(entry, _USED))


# Which Karpathy splits a run's split reads: the usual protocol trains on train + restval (COCO's
# 113k images); the Flickr files have no restval, so their train split is read alone.
RUN_SPLITS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}


def read_karpathy_split(path: str | Path, image_root: str | Path | None = None, *, split: str,
                        on_bad_sample: str = "error") -> ReadResult:
    """The images of a run's split ("train", "val" or "test", see RUN_SPLITS) from one Karpathy file."""
    if split not in RUN_SPLITS:
        raise DataError(f"unknown split {split!r}: expected one of {', '.join(RUN_SPLITS)}", path=path)
    return read_karpathy(path, image_root, splits=RUN_SPLITS[split], on_bad_sample=on_bad_sample)
