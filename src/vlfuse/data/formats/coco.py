"""Readers for the official COCO annotation files: captions and object instances.

Both files share `images: [{"id", "file_name", "width", "height", ...}]`; captions add
`annotations: [{"image_id", "caption"}]`, instances `annotations: [{"image_id", "category_id",
"bbox": [x, y, w, h] in pixels, "iscrowd"}]` and `categories: [{"id", "name"}]` (ids have gaps).
Captions come out as one CaptionSample per image (human captions often end in a space: stripped);
instances as one RegionAnnotation per image, boxes as (x0, y0, x1, y1) fractions of the image,
clipped to [0, 1]. An image with no annotation is kept with none (COCO has such images).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlfuse.data.formats.common import ReadResult, SkipLog, read_json
from vlfuse.data.formats.fields import (Where, as_list, as_object, brief, image_file, image_folder, is_int,
                                        number, plain_name, require, required_text)
from vlfuse.data.records import CaptionSample, RegionAnnotation
from vlfuse.errors import DataError


MAX_SIDE = 1_000_000  # pixels: a larger width or height is a corrupt entry, not a photo


@dataclass(frozen=True)
class _Image:
    index: int
    id: int
    path: Path
    width: Any
    height: Any


def read_coco_captions(captions_json: str | Path, image_dir: str | Path | None = None, *,
                       split: str | None = None, on_bad_sample: str = "error",
                       check_images: bool = True) -> ReadResult:
    """Read `captions_<split>.json` into CaptionSamples, in the file's image order.

    `image_dir` defaults to the published layout: `annotations/captions_val2017.json` ->
    `val2017/` beside `annotations/`. `split` defaults to the name in the file name ("val2017").
    """
    skipped = SkipLog(on_bad_sample)
    path = Path(captions_json)
    doc = read_json(path)
    split = split if split is not None else _split_name(path, "captions_")
    images, seen = _images(doc, path, _image_dir(path, image_dir, split), check_images, skipped)
    captions: dict[int, list[str]] = defaultdict(list)

    def add(where: Where, entry: dict, image: _Image) -> None:
        captions[image.id].append(required_text(entry, "caption", where))

    _each_annotation(doc, path, images, seen, skipped, add)
    samples = [CaptionSample(image.id, image.path, tuple(captions[image.id]), split,
                             extra={"width": image.width, "height": image.height}) for image in images.values()]
    return ReadResult(samples=samples, skipped=skipped)


def read_coco_instances(instances_json: str | Path, image_dir: str | Path | None = None, *,
                        on_bad_sample: str = "error", check_images: bool = True) -> ReadResult:
    """Read `instances_<split>.json` into RegionAnnotations (boxes and category names per image).

    A bad annotation (unknown image or category, a box that is not four finite numbers with
    positive width and height) is a bad sample; the image keeps its other boxes.
    """
    skipped = SkipLog(on_bad_sample)
    path = Path(instances_json)
    doc = read_json(path)
    categories = _categories(doc, path)
    images, seen = _images(doc, path, _image_dir(path, image_dir, _split_name(path, "instances_")), check_images,
                           skipped, need_size=True)
    regions: dict[int, list[tuple]] = defaultdict(list)

    def add(where: Where, entry: dict, image: _Image) -> None:
        category = require(entry, "category_id", where)
        if not is_int(category) or category not in categories:
            raise where.at("category_id").error(f"unknown category_id {brief(category)}")
        box = _box(require(entry, "bbox", where), where.at("bbox"), image)
        regions[image.id].append((box, categories[category], category, bool(entry.get("iscrowd")), entry.get("id")))

    _each_annotation(doc, path, images, seen, skipped, add)
    samples = []
    for image in images.values():
        found = regions[image.id]
        samples.append(RegionAnnotation(
            image.id, image.path, image.width, image.height, boxes=tuple(r[0] for r in found),
            categories=tuple(r[1] for r in found),
            extra={"category_ids": tuple(r[2] for r in found), "iscrowd": tuple(r[3] for r in found),
                   "annotation_ids": tuple(r[4] for r in found)}))
    return ReadResult(samples=samples, skipped=skipped)


def _split_name(path: Path, prefix: str) -> str:
    return path.stem.removeprefix(prefix)


def _image_dir(path: Path, image_dir: str | Path | None, split: str) -> Path:
    return Path(image_dir) if image_dir is not None else path.parent.parent / split


def _top_list(doc: Any, key: str, path: Path) -> list:
    """doc[key] as a list; a wrong structure here is fatal, not a bad sample."""
    if not isinstance(doc, dict):
        raise DataError(f"expected a JSON object with an {key!r} list, got {type(doc).__name__}", path=path)
    if key not in doc:
        raise DataError(f"missing {key!r} list", path=path, field=key)
    return as_list(doc[key], Where(path, field=key))


def _images(doc: Any, path: Path, folder: Path, check_images: bool, skipped: SkipLog,
            need_size: bool = False) -> tuple[dict[int, _Image], set]:
    """Good images by id, and every id seen (so a bad image's annotations are not also reported)."""
    raw = _top_list(doc, "images", path)
    image_folder(folder, check_images)
    images: dict[int, _Image] = {}
    seen: set = set()
    for index, entry in enumerate(raw):
        where = Where(path, field=f"images[{index}]")
        try:
            entry = as_object(entry, where)
            image_id = require(entry, "id", where)
            if not is_int(image_id):
                raise where.at("id").error(f"id must be an integer, got {type(image_id).__name__}")
            if image_id in seen:
                raise where.at("id").error(f"duplicate image id {image_id}")
            seen.add(image_id)
            name = plain_name(require(entry, "file_name", where), where.at("file_name"), "file_name")
            width, height = entry.get("width"), entry.get("height")
            if need_size:
                for key in ("width", "height"):
                    size = require(entry, key, where)
                    if not (is_int(size) and 0 < size <= MAX_SIDE):
                        raise where.at(key).error(f"{key} must be a positive integer (at most {MAX_SIDE}), "
                                                  f"got {brief(size)}")
            images[image_id] = _Image(index, image_id, image_file(folder / name, where.at("file_name"), check_images),
                                      width, height)
        except DataError as error:
            skipped.add(error)
    return images, seen


def _each_annotation(doc: dict, path: Path, images: dict[int, _Image], seen: set, skipped: SkipLog,
                     handle: Callable[[Where, dict, _Image], None]) -> None:
    """Call `handle(where, entry, image)` for each annotation of a good image, under the policy:
    a DataError from the entry or from `handle` is one bad sample."""
    for index, entry in enumerate(_top_list(doc, "annotations", path)):
        where = Where(path, field=f"annotations[{index}]")
        try:
            entry = as_object(entry, where)
            image_id = require(entry, "image_id", where)
            if not (is_int(image_id) and image_id in seen):
                raise where.at("image_id").error(f"unknown image id {brief(image_id)}")
            if image_id in images:  # else its image was already reported bad
                handle(where, entry, images[image_id])
        except DataError as error:
            skipped.add(error)


def _categories(doc: Any, path: Path) -> dict[int, str]:
    """Category names by id; a malformed category list is fatal (every box depends on it)."""
    names = {}
    for index, entry in enumerate(_top_list(doc, "categories", path)):
        where = Where(path, field=f"categories[{index}]")
        entry = as_object(entry, where)
        category = require(entry, "id", where)
        if not is_int(category):
            raise where.at("id").error(f"id must be an integer, got {type(category).__name__}")
        names[category] = required_text(entry, "name", where)
    return names


def _box(raw: Any, where: Where, image: _Image) -> tuple[float, float, float, float]:
    """COCO's pixel [x, y, w, h] as (x0, y0, x1, y1) fractions of the image, clipped to [0, 1]."""
    values = as_list(raw, where)
    if len(values) != 4:
        raise where.error(f"bbox must be [x, y, width, height], got {len(values)} numbers")
    x, y, w, h = (number(v, where.at(i), "bbox value") for i, v in enumerate(values))
    if w <= 0 or h <= 0:
        raise where.error(f"bbox has no area: width {w}, height {h}")

    def clip(v: float) -> float:
        return min(max(v, 0.0), 1.0)

    return clip(x / image.width), clip(y / image.height), clip((x + w) / image.width), clip((y + h) / image.height)
