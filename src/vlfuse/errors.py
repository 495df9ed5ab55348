"""One error family, so callers (CLI, server, training loop) can tell our clear messages from bugs."""

from __future__ import annotations

from pathlib import Path


class VLFuseError(Exception):
    """Base of every error vlfuse raises on purpose; its message is meant for a person."""


class ConfigError(VLFuseError, ValueError):
    """A config key, value or type is wrong; the message names the key."""


class DataError(VLFuseError, ValueError):
    """Input data is missing or malformed; the message names the file and, where known, line or field."""

    def __init__(self, reason: str, *, path: str | Path | None = None, line: int | None = None,
                 field: str | None = None):
        self.reason = reason
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        where = self.path or ""
        if line is not None:
            where += f":{line}"
        if field is not None:
            where += f" [{field}]" if where else f"[{field}]"
        super().__init__(f"{where}: {reason}" if where else reason)


class ImageError(DataError):
    """An image file is missing, unreadable, corrupt, too large or of an unsupported kind."""


class WeightsError(VLFuseError, ValueError):
    """Pretrained weights are missing, unreadable or incomplete; the message names the path to pass."""


class MissingDependencyError(VLFuseError, ImportError):
    """An optional package is not installed; the message says what to `pip install`."""
