"""Reader for NLVR2: JSON Lines of `{"identifier", "sentence", "label", ...}`, two photos per statement.

The identifier `<split>-<set>-<pair>-<sentence>` names the image pair `<split>-<set>-<pair>-img0.png`
(left) and `-img1.png` (right), directly in `image_dir` or, where the row has a `directory`
(train), in `image_dir/<directory>/`.

Limitation: VQASample has one image, so `image_path` is the left image and both paths are kept
in `extra["images"]` (left, right). Models trained through the VQA pipeline see only the left
photo, which caps accuracy on statements about the right one; a pair-aware dataset can read
`extra["images"]`. The answer is "true"/"false" (NLVR2 writes "True"/"False"); url, writer,
synset, query and the validations stay in `extra`.
"""

from __future__ import annotations

import re
from pathlib import Path

from vlfuse.data.formats.common import ReadResult, SkipLog
from vlfuse.data.formats.fields import (Where, as_object, extra_fields, image_file, image_folder, plain_name,
                                        question_text, read_unique_lines, require, true_false)
from vlfuse.data.records import VQASample

_IDENTIFIER = re.compile(r"^(.+)-\d+$")  # the pair's name, then the sentence number
_USED = frozenset({"identifier", "sentence", "label", "directory"})


def read_nlvr2(path: str | Path, image_dir: str | Path | None = None, *, on_bad_sample: str = "error",
               check_images: bool = True) -> ReadResult:
    """Read an NLVR2 split file; `image_dir` defaults to the file's folder. A missing left or right
    image is a bad sample."""
    skipped = SkipLog(on_bad_sample)
    path = Path(path)
    folder = image_folder(Path(image_dir) if image_dir is not None else path.parent, check_images)
    samples = read_unique_lines(path, skipped, lambda row, where: _sample(row, where, folder, check_images),
                                "identifier")
    return ReadResult(samples=samples, skipped=skipped)


def _sample(row: object, where: Where, folder: Path, check_images: bool) -> VQASample:
    row = as_object(row, where)
    ident = plain_name(require(row, "identifier", where), where.at("identifier"), "identifier")
    match = _IDENTIFIER.match(ident)
    if match is None:
        raise where.at("identifier").error(f"identifier {ident!r} is not <split>-<set>-<pair>-<sentence>")
    pair = match.group(1)
    if row.get("directory") is not None:
        folder = folder / plain_name(row["directory"], where.at("directory"), "directory")
    left, right = (image_file(folder / f"{pair}-img{side}.png", where.at("identifier"), check_images,
                              what=f"{name} image of {ident!r}") for side, name in ((0, "left"), (1, "right")))
    label = true_false(require(row, "label", where), where.at("label"))
    return VQASample(question_id=ident, image_id=pair, image_path=left, question=question_text(row, "sentence", where),
                     answer=label, answers=(label,), question_type="nlvr2", answer_type="true/false",
                     extra={"images": (left, right), **extra_fields(row, _USED)})
