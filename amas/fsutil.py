"""File helpers: crash-safe writes (a reader sees the old file or the complete new one, never a
part) and non-blocking file locks (one holder at a time, a second one refused at once)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from amas.errors import AmasError


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` survive a crash (POSIX needs the directory synced)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(target: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write`` with a temporary file beside ``target``, fsync it, rename it over ``target``.

    On any failure the temporary file is removed and ``target`` keeps its old bytes.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    # os.open with 0o666 honours the umask, unlike mkstemp's fixed 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "wb") as sink:
            write(sink)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    return target


@contextlib.contextmanager
def exclusive_lock(path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created) for the block, or raise ``AmasError(busy)`` at once.

    The kernel releases the lock when its holder exits, however it exits, so a killed run never
    leaves a stale lock behind. ``flock`` locks belong to an open file description: a second
    holder in the same process is refused too.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AmasError(busy) from None
        yield
    finally:
        os.close(fd)
