"""Feature cache for frozen encoders: the frozen backbone runs once per image (and caption), ever.

A frozen encoder's backbone gives the same output for the same image at every epoch and in every
run, so `data.feature_cache: DIR` computes it once and stores it on disk; training then feeds the
stored output to the encoder's trainable part (`from_frozen`: EfficientNet's projection) instead of
running the backbone. Keys and invalidation:

- an image's key is the sha256 of its file bytes (a renamed or copied file hits, an edited one misses);
  the image flipped left-right (data.hflip, retrieval.flip_average) is that key + "-mirrored";
- the cache lives in `DIR/<fingerprint>/`, where the fingerprint hashes the encoder's frozen part
  (class, backbone weights, input size and normalisation), the data's image_size (images are
  resized before the encoder sees them) and this file's format version. Another encoder, other
  weights or another image size is another folder: stale features are never read.

Layout of a cache folder: `meta.json` (what it holds), `chunk-<hash>.safetensors` files of
`features [n, ...]` (float32, exactly what the backbone returned) and `index.jsonl`, one line per
chunk: its file, sha256 and the image keys of its rows. A chunk is written to a temporary name and
renamed when complete, then its index line is appended, so an interrupted build leaves only whole
chunks behind and resumes where it stopped; a torn last index line is ignored. A chunk whose bytes
no longer match its sha256 is reported by name (training) or rebuilt (`vlfuse cache build`).

Text (tasks retrieval, vqa, matching and classification: a frozen pretrained text encoder,
data.cache_text; vlfuse.data.cached_inputs puts the states in the batches): the same folders hold the
text encoder's frozen states, `DIR/<text fingerprint>/`. A caption's key is the sha256 of its token
ids (the text as the encoder reads it, truncation included); the fingerprint hashes the encoder's
class, its frozen weights, where the frozen part stops (`tune_layers`) and the tokenizer file, so
another encoder or tokenizer never reads an old cache. Captions differ in length, so a text chunk
stores its rows' real tokens end to end, `features [sum of lengths, H]`, with `lengths [n]`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from ..progress import track

CACHE_FORMAT = 1
INDEX, META = "index.jsonl", "meta.json"


def image_key(path: str | Path) -> str:
    """sha256 of the image file's bytes (a member of a tar shard too): the cache key of an image."""
    from .tar import read_member, tar_member

    path = Path(path)
    member = tar_member(path)
    try:
        data = read_member(*member) if member else path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read image file: {exc.strerror or exc}", path=path) from None
    return hashlib.sha256(data).hexdigest()


def check_cacheable(encoder: torch.nn.Module) -> None:
    """Refuse, with the key to change, an image encoder whose features cannot be cached."""
    name = type(encoder).__name__
    if not all(hasattr(encoder, m) for m in ("frozen_features", "from_frozen", "frozen_fingerprint")):
        raise ConfigError(f"config key 'data.feature_cache' needs a frozen pretrained image encoder that can be "
                          f"split into a cached part (model.image_encoder: {{name: efficientnet, freeze: true}}); "
                          f"{name} cannot: remove data.feature_cache")
    if not getattr(encoder, "frozen", False):
        raise ConfigError(f"config key 'data.feature_cache' is set but the image encoder ({name}) is trainable "
                          "(model.image_encoder.freeze: false): its features change at every step, so cached ones "
                          "would be stale; set model.image_encoder.freeze: true or remove data.feature_cache")


def text_encoder_fingerprint(encoder: torch.nn.Module) -> str:
    return hashlib.sha256(f"vlfuse-text-cache-{CACHE_FORMAT}|{encoder.frozen_fingerprint()}".encode()).hexdigest()


def encoder_fingerprint(encoder: torch.nn.Module, image_size: int) -> str:
    check_cacheable(encoder)
    return hashlib.sha256(f"vlfuse-feature-cache-{CACHE_FORMAT}|{image_size}|{encoder.frozen_fingerprint()}"
                          .encode()).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class Chunk:
    file: str
    sha256: str
    keys: list[str]


class FeatureCache:
    """The cached features of one encoder fingerprint: `DIR/<fingerprint[:16]>/`."""

    def __init__(self, root: str | Path, fingerprint: str, description: dict | None = None):
        self.root, self.fingerprint = Path(root).expanduser(), fingerprint
        self.folder = self.root / fingerprint[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        meta_file = self.folder / META
        if meta_file.is_file():
            meta = read_meta(self.folder)
            if meta.get("fingerprint") != fingerprint:
                raise DataError(f"holds another encoder's features (fingerprint {meta.get('fingerprint')}, "
                                f"expected {fingerprint}): delete the folder", path=self.folder)
        else:
            meta = {"format": CACHE_FORMAT, "fingerprint": fingerprint, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    **(description or {})}
            _write_atomic(meta_file, lambda p: p.write_text(json.dumps(meta, indent=2), encoding="utf-8"))
        self.meta = meta
        _drop_torn_tail(self.folder / INDEX)
        self._load_index()

    def _load_index(self) -> None:
        self.chunks: list[Chunk] = read_index(self.folder)
        self._where: dict[str, tuple[int, int]] = {}  # key -> (chunk number, row)
        for number, chunk in enumerate(self.chunks):
            for row, key in enumerate(chunk.keys):
                self._where[key] = (number, row)

    @classmethod
    def for_encoder(cls, root: str | Path, encoder: torch.nn.Module, image_size: int) -> "FeatureCache":
        description = {"encoder": type(encoder).__name__, "image_size": image_size,
                       "tune_blocks": getattr(encoder, "tune_blocks", 0),
                       "encoder_fingerprint": encoder.frozen_fingerprint() if hasattr(encoder, "frozen_fingerprint")
                       else None}
        return cls(root, encoder_fingerprint(encoder, image_size), description)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    @classmethod
    def for_text_encoder(cls, root: str | Path, encoder: torch.nn.Module) -> "FeatureCache":
        description = {"kind": "text", "encoder": type(encoder).__name__,
                       "tune_layers": getattr(encoder, "tune_layers", 0)}
        return cls(root, text_encoder_fingerprint(encoder), description)

    def add(self, keys: list[str], features: torch.Tensor, lengths: list[int] | None = None) -> Path:
        """Store one chunk (rows = keys) atomically, then record it in the index. With `lengths`, row i
        is `lengths[i]` consecutive rows of `features` (ragged rows: text)."""
        from safetensors.torch import save

        rows = len(features) if lengths is None else len(lengths)
        if len(keys) != rows or (lengths is not None and sum(lengths) != len(features)):
            raise ValueError(f"{len(keys)} keys for {rows} feature rows")
        # Named after its keys: two processes building the same chunk write the same file.
        name = f"chunk-{hashlib.sha256(''.join(keys).encode()).hexdigest()[:20]}.safetensors"
        path = self.folder / name
        tensors = {"features": features.detach().cpu().contiguous()}
        if lengths is not None:
            tensors["lengths"] = torch.tensor(lengths, dtype=torch.int64)
        data = save(tensors, metadata={"keys": json.dumps(keys)})
        _write_atomic(path, lambda p: p.write_bytes(data))
        chunk = Chunk(name, hashlib.sha256(data).hexdigest(), list(keys))
        with (self.folder / INDEX).open("a", encoding="utf-8") as f:
            f.write(json.dumps({"file": chunk.file, "sha256": chunk.sha256, "keys": chunk.keys}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.chunks.append(chunk)
        for row, key in enumerate(keys):
            self._where[key] = (len(self.chunks) - 1, row)
        return path

    def _load_chunk(self, chunk: Chunk) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        path = self.folder / chunk.file
        fix = "delete it (or the whole cache folder) or run `vlfuse cache build CONFIG` to rebuild it"
        if not path.is_file():
            raise DataError(f"feature cache chunk is missing: {fix}", path=path)
        if _sha256_file(path) != chunk.sha256:
            raise DataError(f"feature cache chunk is corrupt (its sha256 differs from the index): {fix}", path=path)
        try:
            tensors = load_file(str(path))
            features = tensors["features"]
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types on a bad file
            raise DataError(f"cannot read feature cache chunk ({type(exc).__name__}: {exc}): {fix}",
                            path=path) from None
        rows = len(tensors["lengths"]) if "lengths" in tensors else len(features)
        if rows != len(chunk.keys):
            raise DataError(f"feature cache chunk has {rows} rows for {len(chunk.keys)} keys: {fix}", path=path)
        return tensors

    def _by_chunk(self, keys: list[str]):
        """(the chunk's tensors, positions in `keys`, rows in the chunk) for each chunk `keys` reach."""
        missing = [k for k in keys if k not in self._where]
        if missing:
            raise KeyError(f"{len(missing)} items are not in the feature cache {self.folder} (first: {missing[0]})")
        wanted: dict[int, list[tuple[int, int]]] = {}
        for position, key in enumerate(keys):
            number, row = self._where[key]
            wanted.setdefault(number, []).append((position, row))
        for number, pairs in wanted.items():
            positions, rows = zip(*pairs)
            yield self._load_chunk(self.chunks[number]), list(positions), list(rows)

    def get(self, keys: list[str]) -> torch.Tensor:
        """Features [len(keys), ...] in the order of `keys` (each chunk read and checked once)."""
        out: torch.Tensor | None = None
        for tensors, positions, rows in self._by_chunk(keys):
            features = tensors["features"]
            if out is None:
                out = features.new_empty((len(keys), *features.shape[1:]))
            out[positions] = features[rows]
        return out if out is not None else torch.empty(0)

    def get_ragged(self, keys: list[str]) -> list[torch.Tensor]:
        """Ragged rows (text: [length, H] each) in the order of `keys`."""
        out: list[torch.Tensor | None] = [None] * len(keys)
        for tensors, positions, rows in self._by_chunk(keys):
            pieces = tensors["features"].split(tensors["lengths"].tolist())
            for position, row in zip(positions, rows):
                out[position] = pieces[row]
        return out

    def drop_corrupt(self) -> list[Path]:
        """Verify every chunk; forget (and delete) the bad ones so a build recomputes their images."""
        bad = []
        for chunk in self.chunks:
            path = self.folder / chunk.file
            if not path.is_file() or _sha256_file(path) != chunk.sha256:
                bad.append(chunk)
        if bad:
            good = [c for c in self.chunks if c not in bad]
            lines = "".join(json.dumps({"file": c.file, "sha256": c.sha256, "keys": c.keys}) + "\n" for c in good)
            _write_atomic(self.folder / INDEX, lambda p: p.write_text(lines, encoding="utf-8"))
            for chunk in bad:
                (self.folder / chunk.file).unlink(missing_ok=True)
            self._load_index()
        return [self.folder / c.file for c in bad]


def _drop_torn_tail(index: Path) -> None:
    """Cut a last line that a killed build left without its newline, so the next line starts clean."""
    if not index.is_file():
        return
    data = index.read_bytes()
    if data and not data.endswith(b"\n"):
        with index.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def read_meta(folder: Path) -> dict:
    try:
        return json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"not a readable feature cache description ({exc})", path=folder / META) from None


def read_index(folder: Path) -> list[Chunk]:
    """The index's chunks; a torn last line (a build killed while appending) is dropped, a later
    duplicate of a chunk replaces the earlier one, any other bad line is an error naming it."""
    path = folder / INDEX
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    chunks: dict[str, Chunk] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            chunk = Chunk(record["file"], record["sha256"], list(record["keys"]))
        except (ValueError, KeyError, TypeError) as exc:
            if number == len(lines):  # no newline after it: the write was cut short
                continue
            raise DataError(f"bad feature cache index line ({exc}): delete the cache folder", path=path,
                            line=number) from None
        chunks[chunk.file] = chunk
    return list(chunks.values())


# --------------------------------------------------------------------------- building and use

MIRRORED = "-mirrored"  # appended to an image's key: the features of the image flipped left-right


@dataclass
class CachedImages:
    """Features for a set of image paths: `features[row_of[path]]`; `errors[path]` for unreadable images."""

    features: torch.Tensor
    row_of: dict[Path, int]
    errors: dict[Path, DataError]
    computed: int  # images whose features this call computed (the rest were cache hits)

    def loader(self, path: Path) -> torch.Tensor:
        """A dataset's image_loader: the cached features of `path`, or the reason it has none."""
        path = Path(path)
        if path in self.errors:
            raise self.errors[path]
        return self.features[self.row_of[path]]


@torch.no_grad()
def ensure_features(cache: FeatureCache, encoder: torch.nn.Module, paths: Iterable[str | Path], image_size: int,
                    *, chunk_size: int = 64, batch_size: int = 32, progress: bool = True,
                    repair: bool = False, mirrored: bool = False) -> CachedImages:
    """Compute the features of every image in `paths` that the cache lacks, store them, return all.

    Unreadable images are recorded in `errors` (the dataset's skip policy decides what to do), not
    raised. `repair=True` first drops corrupt chunks, so their images are computed again. `mirrored`:
    the features of each image flipped left-right (keyed apart from the image's own: MIRRORED).
    """
    from .images import image_to_tensor, load_image

    if repair:
        cache.drop_corrupt()
    paths = list(dict.fromkeys(Path(p) for p in paths))
    keys: dict[Path, str] = {}
    errors: dict[Path, DataError] = {}
    for path in track(paths, "Hashing images", enabled=progress and len(paths) > 256):
        try:
            keys[path] = image_key(path) + (MIRRORED if mirrored else "")
        except DataError as exc:
            errors[path] = exc
    todo = list(dict.fromkeys(k for k in keys.values() if k not in cache))
    first_path = {}
    for path, key in keys.items():
        first_path.setdefault(key, path)
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    computed = 0
    try:
        starts = range(0, len(todo), chunk_size)
        what = f"Caching {'mirrored ' if mirrored else ''}image features ({len(todo)} images)"
        for start in track(starts, what, total=len(starts), enabled=progress and bool(todo)):
            chunk_keys, images = [], []
            for key in todo[start: start + chunk_size]:
                path = first_path[key]
                try:
                    image = image_to_tensor(load_image(path), image_size)
                    images.append(image.flip(-1) if mirrored else image)
                except DataError as exc:
                    errors[path] = exc
                    continue
                chunk_keys.append(key)
            if not chunk_keys:
                continue
            stacked = torch.stack(images)
            parts = [encoder.frozen_features(stacked[i: i + batch_size].to(device).float() / 255).float().cpu()
                     for i in range(0, len(stacked), batch_size)]
            cache.add(chunk_keys, torch.cat(parts))
            computed += len(chunk_keys)
    finally:
        encoder.train(was_training)
    # Every path of a failed image fails, not only the one that was decoded.
    bad_keys = {keys[p]: e for p, e in errors.items() if p in keys}
    for path, key in keys.items():
        if key in bad_keys:
            errors.setdefault(path, bad_keys[key])
    good = [p for p in paths if p not in errors]
    unique = list(dict.fromkeys(keys[p] for p in good))
    features = cache.get(unique) if unique else torch.empty(0)
    row = {k: i for i, k in enumerate(unique)}
    return CachedImages(features, {p: row[keys[p]] for p in good}, errors, computed)


class ImagesAreFeatures:
    """A collate whose items carry cached features instead of images: the batch's "images" become
    "image_features", which the model passes to the encoder's from_frozen. A class: picklable for
    DataLoader workers, unlike a closure."""

    def __init__(self, collate: Callable[[list], dict]):
        self.collate = collate

    def __call__(self, items: list) -> dict:
        batch = self.collate(items)
        batch["image_features"] = batch.pop("images")
        return batch


def cache_info(root: str | Path, verify: bool = False) -> list[dict]:
    """One summary per encoder folder in a cache directory: what it holds, how big, and (verify) bad chunks."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError("no feature cache here", path=root)
    out = []
    for folder in sorted(p for p in root.iterdir() if (p / META).is_file()):
        meta = read_meta(folder)
        chunks = read_index(folder)
        size = sum((folder / c.file).stat().st_size for c in chunks if (folder / c.file).is_file())
        entry = {"folder": str(folder), "kind": meta.get("kind", "image"), "encoder": meta.get("encoder"),
                 "image_size": meta.get("image_size"),
                 "fingerprint": meta.get("fingerprint"), "created": meta.get("created"),
                 "images": len({k for c in chunks for k in c.keys}), "chunks": len(chunks), "bytes": size}
        if chunks and (folder / chunks[0].file).is_file():
            from safetensors import safe_open

            with safe_open(str(folder / chunks[0].file), "pt") as f:
                entry["feature_shape"] = list(f.get_slice("features").get_shape()[1:])
        if verify:
            entry["corrupt"] = [c.file for c in chunks
                                if not (folder / c.file).is_file() or _sha256_file(folder / c.file) != c.sha256]
        out.append(entry)
    return out


def feature_loader(config, image_encoder: torch.nn.Module, samples: Iterable, progress: bool = True,
                   mirrored: bool = False) -> Callable[[Path], torch.Tensor] | None:
    """A task's hook: None without data.feature_cache, else the cached-features image_loader for `samples`
    (`mirrored`: of the images flipped left-right)."""
    if not config.data.feature_cache:
        return None
    cache = FeatureCache.for_encoder(config.data.feature_cache, image_encoder, config.data.image_size)
    image_encoder.feature_cache_fingerprint = cache.fingerprint  # for check_cache_current
    cached = ensure_features(cache, image_encoder, (s.image_path for s in samples), config.data.image_size,
                             progress=progress, mirrored=mirrored)
    return cached.loader


def feature_collate(config, collate: Callable[[list], dict]) -> Callable[[list], dict]:
    """`collate` as it is, or (data.feature_cache) renaming the batch's images to image_features."""
    return ImagesAreFeatures(collate) if config.data.feature_cache else collate


def text_key(ids: list[int]) -> str:
    """sha256 of a caption's token ids: the cache key of a text (the folder pins the tokenizer)."""
    return hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()


def text_cacheable(encoder: torch.nn.Module) -> bool:
    """Whether `encoder` is a frozen text encoder that splits into a cached part and a trained rest."""
    return all(hasattr(encoder, m) for m in ("frozen_features", "from_frozen", "frozen_fingerprint")) and \
        bool(getattr(encoder, "frozen", False))


@torch.no_grad()
def ensure_text_features(cache: FeatureCache, encoder: torch.nn.Module, caption_ids: list[list[int]], *,
                         chunk_size: int = 1024, batch_size: int = 128, progress: bool = True,
                         repair: bool = False) -> tuple[list[torch.Tensor], int]:
    """(the frozen states [length, H] of each caption, in order; how many captions this call computed)."""
    from .tokenizer import pad_ids

    if repair:
        cache.drop_corrupt()
    keys = [text_key(ids) for ids in caption_ids]
    first: dict[str, list[int]] = {}
    for key, ids in zip(keys, caption_ids):
        if key not in cache:
            first.setdefault(key, ids)
    todo = sorted(first, key=lambda k: len(first[k]))  # similar lengths batch with little padding
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    try:
        starts = range(0, len(todo), chunk_size)
        for start in track(starts, f"Caching text features ({len(todo)} captions)", total=len(starts),
                           enabled=progress and bool(todo)):
            chunk_keys, rows = todo[start: start + chunk_size], []
            for at in range(0, len(chunk_keys), batch_size):
                ids, mask = pad_ids([first[k] for k in chunk_keys[at: at + batch_size]])
                states = encoder.frozen_features(ids.to(device), mask.to(device)).float().cpu()
                rows += [row[: int(m.sum())] for row, m in zip(states, mask)]
            cache.add(chunk_keys, torch.cat(rows), [len(r) for r in rows])
    finally:
        encoder.train(was_training)
    return cache.get_ragged(keys) if keys else [], len(todo)


def caches_text(config, text_encoder: torch.nn.Module) -> bool:
    """Whether a run reads `text_encoder`'s states from the cache: data.feature_cache and data.cache_text
    are set and the encoder is frozen below the part that trains."""
    return bool(config.data.feature_cache and config.data.cache_text and text_cacheable(text_encoder))


def text_feature_states(config, text_encoder: torch.nn.Module, caption_ids: list[list[int]],
                        progress: bool = True) -> list[torch.Tensor] | None:
    """A task's hook: the cached frozen text states of `caption_ids`, or None (`caches_text` is False)."""
    if not caches_text(config, text_encoder):
        return None
    cache = FeatureCache.for_text_encoder(config.data.feature_cache, text_encoder)
    text_encoder.feature_cache_fingerprint = cache.fingerprint  # for check_cache_current
    return ensure_text_features(cache, text_encoder, caption_ids, progress=progress)[0]


CACHE_TASKS = ("vqa", "retrieval", "captioning", "matching", "classification")  # the tasks whose training reads cached features


def check_cache_task(config) -> None:
    if config.data.feature_cache and config.task not in CACHE_TASKS:
        raise ConfigError(f"config key 'data.feature_cache' is read by task {', '.join(CACHE_TASKS)} only, not "
                          f"{config.task}: remove it")


def check_cache_current(config, model: torch.nn.Module) -> None:
    """Refuse to train on cached features once the frozen part's weights changed (train.init loads weights
    after the datasets were built from the cache)."""
    encoder = getattr(model, "image_encoder", None)
    recorded = getattr(encoder, "feature_cache_fingerprint", None)
    if config.data.feature_cache and recorded and encoder_fingerprint(encoder, config.data.image_size) != recorded:
        raise ConfigError("train.init changed the frozen image encoder's weights after its features were read from "
                          "data.feature_cache, so they are stale: remove data.feature_cache for this run")
    encoder = getattr(model, "text_encoder", None)
    recorded = getattr(encoder, "feature_cache_fingerprint", None)
    if config.data.feature_cache and recorded and \
            text_encoder_fingerprint(encoder) != recorded:
        raise ConfigError("train.init changed the frozen text encoder's weights after its states were read from "
                          "data.feature_cache, so they are stale: set data.cache_text: false for this run")
