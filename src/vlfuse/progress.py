"""Progress bars for long loops (rich), silent when disabled."""

from __future__ import annotations

from typing import Iterable, TypeVar

T = TypeVar("T")


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterable[T]:
    if not enabled:
        return items
    from rich.progress import track as rich_track

    return rich_track(items, description=description, total=total, transient=True)
