"""Reader for a plain folder of images, each optionally captioned by a sidecar `<name>.txt`.

The simplest way to bring your own photos: every image under the folder (sub-folders included,
hidden files skipped) becomes a CaptionSample whose id is its path relative to the folder
("cats/001.jpg": unique even where two files share a stem). A sidecar text file with the
image's stem holds its captions, one a line; an image without one gets no captions (ready for
retrieval indexing or captioning). The split is the first sub-folder when `split_from_subfolder`
is set (`train/x.jpg` -> "train").
"""

from __future__ import annotations

from pathlib import Path

from vlfuse.data.formats.common import ReadResult, SkipLog, read_text
from vlfuse.data.formats.fields import IMAGE_SUFFIXES, Where
from vlfuse.data.records import CaptionSample
from vlfuse.errors import DataError


def read_image_folder(folder: str | Path, *, split_from_subfolder: bool = False,
                      on_bad_sample: str = "error") -> ReadResult:
    """Every image under `folder`, in path order, with its sidecar captions.

    A sidecar that is empty or not UTF-8 is a bad sample. Images are listed, not decoded:
    vlfuse.data.images decodes them safely when they are used.
    """
    skipped = SkipLog(on_bad_sample)
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("image folder not found", path=folder)
    samples = []
    for image in _images(folder):
        relative = image.relative_to(folder)
        try:
            split = relative.parts[0] if split_from_subfolder and len(relative.parts) > 1 else ""
            samples.append(CaptionSample(relative.as_posix(), image, _sidecar(image), split))
        except DataError as error:
            skipped.add(error)
    if not samples and not skipped.count:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder", path=folder)
    return ReadResult(samples=samples, skipped=skipped)


def _images(folder: Path) -> list[Path]:
    try:
        found = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    except OSError as exc:
        raise DataError(f"cannot list image folder: {exc.strerror or exc}", path=folder) from None
    return sorted(found)


def _sidecar(image: Path) -> tuple[str, ...]:
    """The captions in `<image stem>.txt` beside the image; () when there is none."""
    sidecar = image.with_suffix(".txt")
    if not sidecar.is_file():
        return ()
    captions = tuple(line.strip() for line in read_text(sidecar).splitlines() if line.strip())
    if not captions:
        raise Where(sidecar).error("empty caption file")
    return captions
