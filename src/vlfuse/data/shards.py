"""WebDataset-style tar shards: write them from any configured split, read them back, stream them.

The layout is the webdataset / open_clip (img2dataset) convention: a shard is a plain tar named
`PREFIX-000000.tar`; a sample is the run of adjacent members sharing a key (the member name up to
the first dot of its base name): `KEY.jpg` (or .png, .webp, ... : the original bytes, never
re-encoded), `KEY.json` (the sample's record) and, for captions, `KEY.txt` (the first caption, which
is what open_clip reads). Shards written here hold one image per sample with all of its questions
(`{"questions": [...]}`, task vqa) or all of its captions (`{"captions": [...]}`, task retrieval),
and `shards.json` beside them lists each shard's sample count.

Three ways in:
- `write_shards` / `vlfuse data shard CONFIG --split train --out DIR`: a configured split -> shards.
- `read_shard_samples` (config `data.format: webdataset`, `data.<split>.path`: a folder of shards,
  one .tar, or a brace pattern `train-{000000..000009}.tar`): VQASamples or CaptionSamples whose
  image paths point *inside* the tars (`.../train-000000.tar/000000017.jpg`); `images.load_image`
  reads those members directly, so every dataset, the feature cache and evaluation work unchanged.
- `ShardStream`: an IterableDataset that streams the shards through DataLoader workers, split
  across workers and processes (rank / world size) so that no sample repeats, with a shuffle buffer.
  Training streams through it with `data.stream: true` (task vqa: data/vqa_stream.py).

Only `tarfile`: nothing is extracted to disk, so member names cannot escape anywhere.
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import ConfigError, DataError
from .formats.common import ReadResult, SkipLog
from .records import CaptionSample, VQASample

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp")
MANIFEST = "shards.json"
_PIL_EXTENSION = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}


# --------------------------------------------------------------------------- naming and listing

def split_key(name: str) -> tuple[str, str]:
    """webdataset's rule: `dir/abc.seg.jpg` -> ("dir/abc", "seg.jpg"); the key ends at the base name's first dot."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower() if dot else ""


def expand_braces(pattern: str) -> list[str]:
    """`train-{000000..000003}.tar` -> the four names (zero padding kept), as webdataset expands them."""
    match = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not match:
        return [pattern]
    first, last = match.group(1), match.group(2)
    width = len(first)
    names = [pattern[: match.start()] + str(i).zfill(width) + pattern[match.end():]
             for i in range(int(first), int(last) + 1)]
    return [n for name in names for n in expand_braces(name)]


def list_shards(location: str | Path) -> list[Path]:
    """A folder (its *.tar, sorted), one .tar file, or a brace pattern -> existing shard paths."""
    location = Path(location).expanduser()
    if location.is_dir():
        shards = sorted(location.glob("*.tar"))
        if not shards:
            raise DataError("no .tar shards in this folder", path=location)
        return shards
    shards = [Path(p) for p in expand_braces(str(location))]
    missing = [p for p in shards if not p.is_file()]
    if missing:
        raise DataError("shard not found" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                        path=missing[0])
    return shards


# --------------------------------------------------------------------------- reading members

def tar_member(path: str | Path) -> tuple[Path, str] | None:
    """`.../shard.tar/KEY.jpg` -> (shard.tar, "KEY.jpg") when that tar exists; None for ordinary paths."""
    path = Path(path)
    for parent in path.parents:
        if parent.suffix == ".tar":
            return (parent, path.relative_to(parent).as_posix()) if parent.is_file() else None
    return None


@functools.lru_cache(maxsize=64)
def _member_index(shard: str, mtime_ns: int, size: int) -> dict[str, tuple[int, int]]:
    """member name -> (data offset, size), read once per shard version (mtime and size in the key)."""
    try:
        with tarfile.open(shard, "r:") as tar:
            return {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read tar shard ({type(exc).__name__}: {exc})", path=shard) from None


def read_member(shard: Path, member: str) -> bytes:
    """The bytes of one regular member of `shard`, by seeking to it (no scan per read)."""
    try:
        stat = shard.stat()
    except OSError as exc:
        raise DataError(f"cannot read tar shard: {exc.strerror or exc}", path=shard) from None
    entry = _member_index(str(shard), stat.st_mtime_ns, stat.st_size).get(member)
    if entry is None:
        raise DataError(f"no member {member!r} in this shard", path=shard)
    offset, size = entry
    with shard.open("rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise DataError(f"member {member!r} is truncated ({len(data)} of {size} bytes)", path=shard)
    return data


@dataclass
class ShardSample:
    """One sample of a shard: its key and its members' bytes by extension ("jpg", "json", ...)."""

    shard: Path
    key: str
    members: dict[str, bytes]

    @property
    def image_extension(self) -> str | None:
        return next((ext for ext in IMAGE_EXTENSIONS if ext in self.members), None)

    def json(self) -> dict:
        """KEY.json as a dict; a bad one is a DataError naming the shard and the member."""
        member = f"{self.key}.json"
        if "json" not in self.members:
            return {}
        try:
            record = json.loads(self.members["json"].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"member {member!r}: not valid JSON ({exc})", path=self.shard) from None
        if not isinstance(record, dict):
            raise DataError(f"member {member!r}: expected a JSON object, got {type(record).__name__}", path=self.shard)
        return record

    def text(self) -> str | None:
        if "txt" not in self.members:
            return None
        try:
            return self.members["txt"].decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise DataError(f"member {self.key + '.txt'!r}: not UTF-8 text ({exc})", path=self.shard) from None


def iter_shard(shard: Path, read_images: bool = True) -> Iterator[ShardSample]:
    """The samples of one shard in order (adjacent members grouped by key), read sequentially.

    With read_images=False an image member's bytes are left unread (b""): listing a shard's
    records then costs only its JSON and text. A non-file member, or a key that comes back after
    another key's members, is a DataError naming the shard and the member.
    """
    seen: set[str] = set()
    current: ShardSample | None = None
    try:
        size = shard.stat().st_size
        with tarfile.open(shard, "r:") as tar:
            for info in tar:
                if info.offset_data + info.size > size:  # tarfile would read the cut member short, silently
                    raise DataError(f"member {info.name!r} is truncated: the shard ends inside it", path=shard)
                if info.isdir():
                    continue
                if not info.isfile():
                    raise DataError(f"member {info.name!r} is not a regular file (links are refused)", path=shard)
                key, ext = split_key(info.name)
                if not ext:
                    raise DataError(f"member {info.name!r} has no extension: cannot tell what it holds", path=shard)
                if current is None or key != current.key:
                    if current is not None:
                        yield current
                    if key in seen:
                        raise DataError(f"member {info.name!r}: key {key!r} appears again after other samples "
                                        "(a sample's members must be adjacent)", path=shard)
                    seen.add(key)
                    current = ShardSample(shard, key, {})
                if ext in current.members:
                    raise DataError(f"member {info.name!r} appears twice", path=shard)
                wanted = read_images or ext not in IMAGE_EXTENSIONS
                current.members[ext] = tar.extractfile(info).read() if wanted else b""
            # tarfile takes a header cut short for the end of the archive: a whole tar ends in zero blocks.
            tar.fileobj.seek(tar.offset)
            end = tar.fileobj.read(1024)
            if len(end) < 1024 or any(end):
                last = f" after member {info.name!r}" if current is not None else ""
                raise DataError(f"truncated tar shard: it stops mid-header{last}, without the end-of-archive "
                                "blocks", path=shard)
    except (tarfile.TarError, EOFError, OSError) as exc:
        where = f" after member {current.key!r}" if current is not None else ""
        raise DataError(f"corrupt or truncated tar shard{where} ({type(exc).__name__}: {exc})", path=shard) from None
    if current is not None:
        yield current


# --------------------------------------------------------------------------- samples <-> records

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


# --------------------------------------------------------------------------- streaming

def _distributed_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardStream(IterableDataset):
    """Streams the samples of tar shards, each exactly once per epoch across workers and processes.

    The (rank, worker) slots split the data: whole shards round-robin when there are at least as
    many shards as slots (each shard is read by one slot only), else samples round-robin within
    every shard (each slot reads all shards, keeps its share). Slots may end with counts that
    differ by up to a shard's worth, unless `items_per_slot` (below) evens them out.
    `shuffle_buffer > 0` shuffles the shard order per epoch and samples
    within a buffer of that many (seeded by seed, epoch and slot: reproducible); call
    `set_epoch` before each epoch (set it before the loader's workers start).

    Each item is a dict: "__key__", "__shard__", "json" (the record, {} when absent), "txt" (or
    None), and "image": uint8 [3, S, S] when `image_size` is given, else the raw bytes.

    Training needs every slot to yield the same number of items (DDP waits for every process at
    each step): `items_per_slot` makes each slot yield exactly that many, going round its own
    samples again when it has fewer (as DistributedSampler pads). `resume_batches` (with
    `batch_size`) skips what the first batches of an interrupted epoch already trained on: the
    DataLoader takes batch i from worker i % workers, so each worker skips its own share and the
    rest comes in the uninterrupted order.
    """

    def __init__(self, location: str | Path | list[Path], *, image_size: int | None = None, shuffle_buffer: int = 0,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 items_per_slot: int | None = None, batch_size: int = 1):
        super().__init__()
        self.shards = list(location) if isinstance(location, list) else list_shards(location)
        self.image_size, self.shuffle_buffer, self.seed = image_size, shuffle_buffer, seed
        self.rank, self.world_size = rank, world_size
        self.items_per_slot, self.batch_size = items_per_slot, batch_size
        self.epoch, self.resume_batches = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _worker(self) -> tuple[int, int]:
        """(worker, workers). After `resume_batches` batches the DataLoader still asks worker 0
        first, so the workers' parts rotate: worker 0 plays the one whose batch comes next."""
        worker = get_worker_info()
        wid, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        return (wid + self.resume_batches) % workers, workers

    def _slot(self) -> tuple[int, int]:
        rank, world = _distributed_rank()
        rank = rank if self.rank is None else self.rank
        world = world if self.world_size is None else self.world_size
        wid, workers = self._worker()
        return rank * workers + wid, world * workers

    def wanted(self, sample: ShardSample) -> bool:
        """Whether a sample is streamed at all (subclasses drop, say, images left out of training)."""
        return True

    def _samples(self, slot: int, slots: int) -> Iterator[ShardSample]:
        shards = list(self.shards)
        if self.shuffle_buffer:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(shards)  # the same order in every slot
        if len(shards) >= slots:
            for shard in shards[slot::slots]:
                yield from filter(self.wanted, iter_shard(shard))
            return
        index = 0
        for shard in shards:
            for sample in filter(self.wanted, iter_shard(shard, read_images=False)):
                if index % slots == slot:
                    yield ShardSample(shard, sample.key, {ext: data or read_member(shard, f"{sample.key}.{ext}")
                                                          for ext, data in sample.members.items()})
                index += 1

    def _shuffled(self, samples: Iterator[ShardSample], slot: int) -> Iterator[ShardSample]:
        if not self.shuffle_buffer:
            yield from samples
            return
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 1_000_003 + slot)
        buffer: list[ShardSample] = []
        for sample in samples:
            buffer.append(sample)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def _item(self, sample: ShardSample) -> dict:
        ext = sample.image_extension
        if ext is None:
            raise DataError(f"sample {sample.key!r} has no image member", path=sample.shard)
        image = sample.members[ext]
        if self.image_size is not None:
            from .images import load_image_bytes
            from .vqa_dataset import image_to_tensor

            image = image_to_tensor(load_image_bytes(image, name=f"{sample.shard}/{sample.key}.{ext}"),
                                    self.image_size)
        return {"__key__": sample.key, "__shard__": str(sample.shard), "json": sample.json(), "txt": sample.text(),
                "image": image}

    def _passes(self, slot: int, slots: int) -> Iterator[ShardSample]:
        """This slot's samples; with items_per_slot, exactly that many, going round again if short."""
        if self.items_per_slot is None:
            yield from self._shuffled(self._samples(slot, slots), slot)
            return
        count = 0
        while count < self.items_per_slot:
            before = count
            for sample in self._shuffled(self._samples(slot, slots), slot):
                yield sample
                count += 1
                if count == self.items_per_slot:
                    return
            if count == before:
                raise DataError(f"stream slot {slot} of {slots} has no samples: write at least as many shards "
                                "as processes x DataLoader workers", path=self.shards[0].parent)

    def _resume_skip(self) -> int:
        """Items this worker already delivered in the interrupted epoch's first `resume_batches` batches."""
        wid, workers = self._worker()
        return len(range(wid, self.resume_batches, workers)) * self.batch_size

    def __iter__(self) -> Iterator[dict]:
        slot, slots = self._slot()
        skip = self._resume_skip()
        for index, sample in enumerate(self._passes(slot, slots)):
            if index >= skip:  # skipped samples are read but never decoded
                item = self._item(sample)
                if item is not None:  # a subclass's way of leaving out a sample it cannot use
                    yield item
