"""Progress for long loops: a rich bar on a terminal, plain lines in a log, silent when disabled."""

from __future__ import annotations

import math
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
LOG_EVERY_SECONDS = 30.0  # a log gets a line at most this often (a bar redraws; a log only grows)


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterable[T]:
    if not enabled:
        return items
    if not sys.stderr.isatty():  # rich draws nothing off a terminal: a log would show no sign of life
        return logged(items, description, total)
    from rich.progress import track as rich_track

    return rich_track(items, description=description, total=total, transient=True)


def logged(items: Iterable[T], description: str, total: int | None = None,
           every: float = LOG_EVERY_SECONDS) -> Iterator[T]:
    """`items`, with a line on stderr every `every` seconds while they last and one when they end, if
    they lasted that long (a short loop stays silent, so a one-line error stays one line):
    "Building the cache: 120/400 (30%) · 1m 05s · ETA 2m 32s", ending "· done"."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    start = last = time.monotonic()
    done, spoke = 0, False
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every:
            last, spoke = now, True
            _line(description, done, total, now - start)
    if spoke:
        _line(description, done, total, time.monotonic() - start, finished=True)


def _line(description: str, done: int, total: int | None, elapsed: float, finished: bool = False) -> None:
    parts = [f"{description}: {done}/{total}" if total else f"{description}: {done}"]
    if total:
        parts[0] += f" ({100 * done / total:.0f}%)"
    parts.append(format_seconds(elapsed))
    if finished:
        parts.append("done")
    elif total and done:
        parts.append(f"ETA {format_seconds(elapsed / done * (total - done))}")
    print(" · ".join(parts), file=sys.stderr, flush=True)


def format_seconds(seconds: float) -> str:
    """`1h 05m`, `3m 07s`; `?` for an unknown (infinite) time."""
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"
