"""Uploaded images, decoded on bounded lanes and cut down at once to what the request needs.

A 40 KB PNG can hold 40 megapixels (120 MB decoded, twice that while it is oriented and converted).
So a decoded picture never outlives its decoding thread: it leaves as the model's input (a few
kilobytes) and, for /explain, a copy at most DISPLAY_SIDE pixels a side to paint the heatmap on.
Large images (by their header, read before decoding) take a lane of their own, one at a time, so
a burst of them costs one image's memory and never holds up the small ones; after each, the freed
memory is handed back to the system (glibc keeps it otherwise, and the process stays large).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

LARGE_PIXELS = 4_000_000  # above this (2000 x 2000) an image decodes on the large lane
DISPLAY_SIDE = 512  # heatmaps are painted on a copy at most this many pixels a side


def header_pixels(data: bytes) -> int:
    """Width x height from the image's header, nothing decoded; 0 if it has none (the decoder says why)."""
    from PIL import Image

    from ..data.images import SUPPORTED_FORMATS

    try:
        with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as image:
            return image.width * image.height
    except Exception:  # noqa: BLE001 - anything unreadable is the decoder's to report
        return 0


def fit_within(picture, side: int = DISPLAY_SIDE):
    """A copy of a PIL image scaled down to at most `side` pixels a side (smaller images as they are)."""
    from PIL import Image

    scale = side / max(picture.size)
    if scale >= 1:
        return picture.copy()
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.BILINEAR, reducing_gap=2.0)


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def release_memory() -> None:
    """Hand freed heap memory back to the system (glibc's malloc_trim; nothing elsewhere)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _then_release(work: Callable[..., T], *args) -> T:
    try:
        return work(*args)
    finally:
        release_memory()  # the decoded picture is gone by now


class Decoder:
    """Runs `make(data)` (decode, then cut down) on the small lane (`threads` threads) or, for images
    over LARGE_PIXELS, on the large lane (one thread)."""

    def __init__(self, threads: int = 2):
        if threads < 1:
            raise ValueError(f"decode threads must be >= 1, got {threads}")
        self.small = ThreadPoolExecutor(threads, thread_name_prefix="vlfuse-decode")
        self.large = ThreadPoolExecutor(1, thread_name_prefix="vlfuse-decode-large")

    async def run(self, data: bytes, make: Callable[[bytes], T]) -> T:
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(self.small, header_pixels, data) <= LARGE_PIXELS:
            return await loop.run_in_executor(self.small, make, data)
        return await self.run_large(make, data)

    async def run_large(self, work: Callable[..., T], *args) -> T:
        """`work(*args)` on the large lane, the memory it freed handed back after it."""
        return await asyncio.get_running_loop().run_in_executor(self.large, _then_release, work, *args)

