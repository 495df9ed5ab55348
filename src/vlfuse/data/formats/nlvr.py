"""Reader for NLVR (v1): JSON Lines of `{"sentence", "label", "identifier", "directory",
"structured_rep", "evals"}`, images `images/<directory>/<split>-<identifier>-<k>.png`.

Each sentence was judged true or false of a scene that is rendered six times (k = 0..5) with its
three boxes in different orders; the label holds for all six, so each image becomes one VQASample
with answer "true"/"false" and question_type "nlvr". The scene's `structured_rep` (its boxes'
objects: type, colour, size, position) is kept in `extra["scene"]` for a later graph fusion; it
lists the boxes in the order of image k = 0. `evals` (the validators' judgments) stays in
`extra["evals"]`.
"""

from __future__ import annotations

import re
from pathlib import Path

from vlfuse.data.formats.common import ReadResult, SkipLog, iter_jsonl
from vlfuse.data.formats.fields import (Where, as_object, image_folder, plain_name, question_text, require,
                                        true_false)
from vlfuse.data.records import VQASample
from vlfuse.errors import DataError

IMAGES_PER_SENTENCE = 6
_IMAGE_NAME = re.compile(r"^[^-]+-(.+)-(\d+)\.png$")  # <split>-<identifier>-<k>.png


def read_nlvr(path: str | Path, image_dir: str | Path | None = None, *, on_bad_sample: str = "error",
              check_images: bool = True) -> ReadResult:
    """Read an NLVR split file (`dev.json`, `train.json`, ...): one sample per sentence and image.

    `image_dir` defaults to `images/` beside the file, the published layout. A sentence with no
    image found is a bad sample. Without `check_images` the six expected paths are used.
    """
    skipped = SkipLog(on_bad_sample)
    path = Path(path)
    images = _Images(image_folder(Path(image_dir) if image_dir is not None else path.parent / "images",
                                  check_images), split=path.stem, check=check_images)
    samples, seen = [], set()
    for line, row in iter_jsonl(path, skipped):
        where = Where(path, line)
        try:
            ident, new = _samples(row, where, images)
            if ident in seen:
                raise where.at("identifier").error(f"duplicate identifier {ident!r}")
            seen.add(ident)
            samples.extend(new)
        except DataError as error:
            skipped.add(error)
    return ReadResult(samples=samples, skipped=skipped)


def _samples(row: object, where: Where, images: _Images) -> tuple[str, list[VQASample]]:
    """(identifier, its samples: one per image)."""
    row = as_object(row, where)
    sentence = question_text(row, "sentence", where)
    label = true_false(require(row, "label", where), where.at("label"))
    ident = plain_name(require(row, "identifier", where), where.at("identifier"), "identifier")
    directory = plain_name(require(row, "directory", where), where.at("directory"), "directory")
    found = images.find(directory, ident)
    if not found:
        raise where.at("identifier").error(f"no images for identifier {ident!r} in {images.root / directory}")
    extra = {"identifier": ident, "directory": directory, "scene": row.get("structured_rep"),
             "evals": row.get("evals")}
    return ident, [VQASample(question_id=f"{ident}-{k}", image_id=image.stem, image_path=image, question=sentence,
                             answer=label, answers=(label,), question_type="nlvr", answer_type="true/false",
                             extra=dict(extra, image_index=k))
                   for k, image in found]


class _Images:
    """The images of each identifier, from one listing per directory (not six stats per sentence)."""

    def __init__(self, root: Path, *, split: str, check: bool):
        self.root, self.split, self.check = root, split, check
        self._listed: dict[str, dict[str, list[tuple[int, Path]]]] = {}

    def find(self, directory: str, ident: str) -> list[tuple[int, Path]]:
        """[(k, path)] in k order; unchecked, the six paths the published layout names."""
        if not self.check:
            return [(k, self.root / directory / f"{self.split}-{ident}-{k}.png") for k in range(IMAGES_PER_SENTENCE)]
        if directory not in self._listed:
            self._listed[directory] = self._list(self.root / directory)
        return self._listed[directory].get(ident, [])

    @staticmethod
    def _list(folder: Path) -> dict[str, list[tuple[int, Path]]]:
        by_ident: dict[str, list[tuple[int, Path]]] = {}
        try:
            names = sorted(folder.iterdir())
        except OSError:
            return by_ident  # a missing directory: its sentences are reported as having no images
        for image in names:
            match = _IMAGE_NAME.match(image.name)
            if match and image.is_file():
                by_ident.setdefault(match.group(1), []).append((int(match.group(2)), image))
        return {ident: sorted(found) for ident, found in by_ident.items()}
