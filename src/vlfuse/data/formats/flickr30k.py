"""Reader for Flickr30k Entities sentence files: `Sentences/<image id>.txt`, five captions a file.

Each caption marks its phrases, `[/EN#221796/people A girl] with [/EN#221804/bodyparts brown
hair] ...`; the markup is stripped to plain text ("A girl with brown hair ...") and the
tokenised punctuation re-attached ("water ." -> "water."), as Karpathy's raw captions read.
Split lists (`train.txt`, `val.txt`, `test.txt`) hold one image id a line; without one, every
sentence file is read. Images are `<image id>.jpg`.
"""

from __future__ import annotations

import re
from pathlib import Path

from vlfuse.data.formats.common import ReadResult, SkipLog, read_text
from vlfuse.data.formats.fields import Where, image_file, image_folder, plain_name
from vlfuse.data.records import CaptionSample
from vlfuse.errors import DataError

_PHRASE = re.compile(r"\[/EN#[^\s\[\]]*\s+([^\[\]]*)\]")  # [/EN#<id>/<type>[/<type>...] <words>]
_DETACHED_PUNCTUATION = re.compile(r"\s+([.,!?;:])(?=\s|$)")


def read_flickr30k(sentences_dir: str | Path, split_file: str | Path | None = None,
                   image_dir: str | Path | None = None, *, on_bad_sample: str = "error",
                   check_images: bool = True) -> ReadResult:
    """Read the captions of the images a split list names (or of every sentence file).

    `image_dir` defaults to `flickr30k-images/` beside the sentences folder, the published name;
    the split is the split file's name ("test"), or "" without one. A listed image without a
    sentence file, with no captions, or with broken markup is a bad sample.
    """
    skipped = SkipLog(on_bad_sample)
    sentences_dir = Path(sentences_dir)
    if not sentences_dir.is_dir():
        raise DataError("sentences folder not found", path=sentences_dir)
    folder = image_folder(Path(image_dir) if image_dir is not None else sentences_dir.parent / "flickr30k-images",
                          check_images)
    split = "" if split_file is None else Path(split_file).stem
    samples, seen = [], set()
    for where, image_id in _image_ids(sentences_dir, split_file):
        try:
            if image_id in seen:
                raise where.error(f"image id {image_id!r} listed twice")
            seen.add(image_id)
            samples.append(CaptionSample(image_id, image_file(folder / f"{image_id}.jpg", where, check_images,
                                                              what=f"image for {image_id!r}"),
                                         _captions(sentences_dir / f"{image_id}.txt", where), split))
        except DataError as error:
            skipped.add(error)
    return ReadResult(samples=samples, skipped=skipped)


def strip_markup(sentence: str) -> str:
    """Flickr30k Entities markup removed, whitespace collapsed, punctuation re-attached."""
    plain = " ".join(_PHRASE.sub(r"\1", sentence).split())
    return _DETACHED_PUNCTUATION.sub(r"\1", plain)


def _image_ids(sentences_dir: Path, split_file: str | Path | None) -> list[tuple[Where, str]]:
    """(where it is listed, image id): the split file's lines, else the sentence files by name."""
    if split_file is None:
        return [(Where(p), p.stem) for p in sorted(sentences_dir.glob("*.txt"))]
    split_file = Path(split_file)
    ids = []
    for number, line in enumerate(read_text(split_file).splitlines(), start=1):
        if line.strip():  # the published lists may end without a newline, or with a blank line
            where = Where(split_file, number)
            ids.append((where, plain_name(line.strip(), where, "image id")))
    return ids


def _captions(path: Path, listed_at: Where) -> tuple[str, ...]:
    if not path.is_file():
        raise listed_at.error(f"no sentence file for this image: {path}")
    captions = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        caption = strip_markup(line)
        if "[" in caption or "]" in caption:  # a phrase left unmatched: unclosed or nested brackets
            raise Where(path, number).error("malformed phrase markup (expected [/EN#<id>/<type> words])")
        if not caption:
            raise Where(path, number).error("empty caption")
        captions.append(caption)
    if not captions:
        raise Where(path).error("no captions in the sentence file")
    return tuple(captions)
