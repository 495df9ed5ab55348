"""Writing shards (`vlfuse data shard`): a configured split -> `PREFIX-000000.tar`, ... and shards.json."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import ConfigError, DataError
from .formats.common import SkipLog
from .records import CaptionSample, VQASample
from .tar import MANIFEST, read_member, tar_member

_PIL_EXTENSION = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}


# --------------------------------------------------------------------------- a tar sample's record

def _vqa_record(samples: list[VQASample]) -> dict:
    first = samples[0]
    return {"image_id": first.image_id, "source": str(first.image_path),
            "questions": [{"question_id": s.question_id, "question": s.question, "answer": s.answer,
                           "answers": list(s.answers), "question_type": s.question_type,
                           "answer_type": s.answer_type, **({"extra": s.extra} if s.extra else {})}
                          for s in samples]}


def _caption_record(sample: CaptionSample) -> dict:
    return {"image_id": sample.image_id, "source": str(sample.image_path), "captions": list(sample.captions),
            "split": sample.split, **({"extra": sample.extra} if sample.extra else {})}


# --------------------------------------------------------------------------- writing

def _image_bytes(path: Path) -> tuple[bytes, str]:
    """The image file's bytes as they are (a tar member too) and the extension its content says."""
    from PIL import Image, UnidentifiedImageError

    member = tar_member(path)
    try:
        data = read_member(*member) if member else path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read image file: {exc.strerror or exc}", path=path) from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            ext = _PIL_EXTENSION.get(image.format)
    except (UnidentifiedImageError, OSError):
        ext = None
    if ext is None:
        raise DataError("not an image in a supported format (JPEG, PNG, WEBP, GIF, BMP)", path=path)
    return data, ext


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed metadata: the same split gives the same bytes
    tar.addfile(info, io.BytesIO(data))


class _ShardWriter:
    """Opens `PREFIX-000000.tar`, `-000001`, ... as each fills; each is written to a temporary name
    and renamed when complete, so an interrupted write never leaves a truncated shard behind."""

    def __init__(self, out: Path, prefix: str, max_samples: int):
        self.out, self.prefix, self.max_samples = out, prefix, max_samples
        self.counts: list[int] = []
        self.tar: tarfile.TarFile | None = None

    def _path(self, index: int) -> Path:
        return self.out / f"{self.prefix}-{index:06d}.tar"

    def write(self, key: str, members: dict[str, bytes]) -> None:
        if self.tar is None or self.counts[-1] >= self.max_samples:
            self._close()
            self.counts.append(0)
            part = self._path(len(self.counts) - 1).with_suffix(".tar.part")
            self.tar = tarfile.open(part, "w", format=tarfile.PAX_FORMAT)
        for ext, data in members.items():
            _add(self.tar, f"{key}.{ext}", data)
        self.counts[-1] += 1

    def _close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            index = len(self.counts) - 1
            os.replace(self._path(index).with_suffix(".tar.part"), self._path(index))
            self.tar = None

    def close(self) -> list[Path]:
        self._close()
        return [self._path(i) for i in range(len(self.counts))]


def write_shards(samples: Iterable[VQASample | CaptionSample], out: str | Path, *, prefix: str = "shard",
                 max_samples_per_shard: int = 1000, skip_log: SkipLog | None = None, progress: bool = False) -> dict:
    """Write samples as tar shards in `out` (one tar sample per image) and `out/shards.json`; returns it.

    VQASamples are grouped by image: one tar sample holds an image with all of its questions.
    Images are copied byte for byte; an unreadable one goes to `skip_log` (default: raise).
    """
    from ..progress import track

    if max_samples_per_shard < 1:
        raise ConfigError(f"--max-samples-per-shard must be >= 1, got {max_samples_per_shard}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stale = sorted(out.glob(f"{prefix}-*.tar"))
    if stale:
        raise ConfigError(f"{out} already holds shards named {prefix}-*.tar ({stale[0].name}...): "
                          "choose another --out or delete them")
    skip_log = skip_log or SkipLog("error")
    groups: dict[Path, list] = {}
    kind = None
    for sample in samples:
        this = "vqa" if isinstance(sample, VQASample) else "captions"
        if kind not in (None, this):
            raise DataError("cannot write question samples and caption samples into one set of shards")
        kind = this
        groups.setdefault(Path(sample.image_path), []).append(sample)
    writer = _ShardWriter(out, prefix, max_samples_per_shard)
    written = 0
    try:
        for path, group in track(groups.items(), "Writing shards", total=len(groups), enabled=progress):
            try:
                data, ext = _image_bytes(path)
            except DataError as exc:
                skip_log.add(exc, samples=len(group))
                continue
            if kind == "vqa":
                record = _vqa_record(group)
                members = {ext: data, "json": json.dumps(record, ensure_ascii=False, default=str).encode()}
            else:
                captions = [c for s in group for c in s.captions]
                record = _caption_record(CaptionSample(group[0].image_id, path, tuple(captions), group[0].split,
                                                       group[0].extra))
                members = {ext: data, "txt": (captions[0] if captions else "").encode(),
                           "json": json.dumps(record, ensure_ascii=False, default=str).encode()}
            writer.write(f"{written:09d}", members)
            written += 1
    finally:
        shards = writer.close()
    manifest = {"kind": kind or "vqa", "samples": written,
                "shards": [{"file": p.name, "samples": n} for p, n in zip(shards, writer.counts)],
                "skipped": skip_log.as_dict()}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest

