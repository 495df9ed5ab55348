"""Tar shard access: name shards and their members, read one member by seeking, walk a shard's samples.

The webdataset / open_clip convention (see vlfuse.data.shards): a sample is the run of adjacent
members sharing a key. Only `tarfile`: nothing is extracted to disk, so member names cannot escape.
"""

from __future__ import annotations

import functools
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp")
MANIFEST = "shards.json"


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

