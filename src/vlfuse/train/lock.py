"""One training run per out_dir: a lock file holding the owner's pid and host.

A second run on the same out_dir is refused with one line and touches nothing (logs, checkpoints).
A lock left by a process that no longer exists (kill -9, power loss) is taken over.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError

LOCK_NAME = "train.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _owner(lock: Path) -> tuple[int | None, str]:
    try:
        pid, _, host = lock.read_text(encoding="utf-8").partition(" ")
        return int(pid), host.strip()
    except (OSError, ValueError):
        return None, ""


def _try_create(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {socket.gethostname()}\n")
    return True


def acquire(out_dir: Path) -> Path:
    """Take out_dir's lock or raise ConfigError naming the run that holds it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = out_dir / LOCK_NAME
    for _ in range(2):  # a second try after taking over a stale lock
        if _try_create(lock):
            return lock
        pid, host = _owner(lock)
        here = host == socket.gethostname()
        if pid is not None and (not here or _alive(pid)):
            where = f"pid {pid}" + ("" if here else f" on {host}")
            raise ConfigError(f"{out_dir} is in use by another training run ({where}; lock file {lock}): "
                              "wait for it to end, or set out_dir elsewhere (delete the lock file if no run "
                              "is active)")
        lock.unlink(missing_ok=True)  # its owner is gone (or unreadable): take it over
    raise ConfigError(f"{out_dir}: another run took the lock file {lock} at the same moment; set out_dir elsewhere")


@contextlib.contextmanager
def out_dir_lock(out_dir: Path) -> Iterator[None]:
    """Hold out_dir's lock for the block. Only the launching process locks: DDP workers that Lightning
    starts (LOCAL_RANK / NODE_RANK > 0) run inside the launcher's lock."""
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        yield
        return
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    lock = acquire(out_dir)
    try:
        yield
    finally:
        if _owner(lock)[0] == os.getpid():
            lock.unlink(missing_ok=True)
        if created and not any(out_dir.iterdir()):  # a run refused at once leaves no empty folder behind
            out_dir.rmdir()
