"""Objects as files under one directory: the ``local`` profile's store and the test double.

A key ``a/b/c`` is the file ``ROOT/a/b/c``. Files are created readable by their owner only
(``mkstemp``'s 0600), because backups and evidence may hold personal data. Empty
directories left behind by ``delete`` are kept: removing them would race with a ``put``
creating a file in the same directory.
"""

from __future__ import annotations

import os
import stat as stat_mode
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit
from urllib.request import url2pathname

from amas.config import StorageSettings
from amas.fsutil import fsync_dir
from amas.errors import ConfigError
from amas.storage.base import (
    CHUNK_SIZE,
    TEMP_PREFIX,
    HashingReader,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    StorageUnavailable,
    exists_by_stat,
    validate_key,
    validate_prefix,
)


class LocalStorage:
    """A ``Storage`` in a directory; see ``amas.storage.base.Storage`` for the contract."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = self.root.as_uri()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StorageUnavailable(
                f"local storage {self.root} is a file, not a directory; "
                "move it away or point AMAS_STORAGE_URL at a directory"
            ) from None
        except OSError as exc:
            raise self._unavailable(exc) from None

    @classmethod
    def from_url(cls, url: str, settings: StorageSettings) -> LocalStorage:
        """Open a plain path or a ``file://`` URL (the S3 settings do not apply here)."""
        parts = urlsplit(url)
        if parts.scheme != "file":
            return cls(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"AMAS_STORAGE_URL {url!r} names host {parts.netloc!r}; a file URL is a local path, like file:///srv/amas"
            )
        path = url2pathname(parts.path)
        if not path:
            raise ConfigError(f"AMAS_STORAGE_URL {url!r} has no path; use file:///absolute/directory")
        return cls(path)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def put(self, key: str, data: bytes | BinaryIO) -> ObjectInfo:
        path = self._path(key)
        source = HashingReader(data)
        with self._writing(key):
            self._make_parents(path.parent)
            fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
        try:
            try:
                while chunk := source.read(CHUNK_SIZE):
                    with self._writing(key):
                        _write_all(fd, chunk)
                with self._writing(key):
                    os.fsync(fd)
                    modified = _modified(os.fstat(fd))
            finally:
                os.close(fd)
            with self._writing(key):
                os.replace(tmp_name, path)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp_name)
            raise
        with self._writing(key):
            fsync_dir(path.parent)
        return ObjectInfo(key=key, size=source.size, sha256=source.sha256, modified=modified)

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        path = self._path(key)
        with self._reading(key):
            return open(path, "rb")

    def get(self, key: str) -> bytes:
        path = self._path(key)
        with self._reading(key):
            return path.read_bytes()

    def exists(self, key: str) -> bool:
        return exists_by_stat(self, key)

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        with self._reading(key):
            info = os.stat(path)
        if not stat_mode.S_ISREG(info.st_mode):
            raise ObjectNotFound(key, self.url)
        return ObjectInfo(key=key, size=info.st_size, modified=_modified(info))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        directory = prefix.rpartition("/")[0]
        start = self.root.joinpath(*directory.split("/")) if directory else self.root
        return self._walk(start, f"{directory}/" if directory else "", prefix)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except PermissionError as exc:
            if path.is_dir():
                return
            raise self._unavailable(exc) from None
        except OSError as exc:
            raise self._unavailable(exc) from None
        with self._writing(key):
            fsync_dir(path.parent)

    def discard_unfinished(self, prefix: str) -> int:
        validate_prefix(prefix)
        # The directory that holds every key starting with the prefix (keys end in a file name).
        parts = prefix.split("/")
        directory = self.root.joinpath(*parts[:-1])
        stem = parts[-1]
        removed = 0
        try:
            for dirpath, _dirs, files in os.walk(directory):
                for name in files:
                    path = Path(dirpath, name)
                    inside = path.relative_to(directory).as_posix()
                    if name.startswith(TEMP_PREFIX) and inside.startswith(stem):
                        with suppress(FileNotFoundError):
                            path.unlink()
                            removed += 1
        except OSError as exc:
            raise self._unavailable(exc) from None
        return removed

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _walk(self, directory: Path, base: str, prefix: str) -> Iterator[ObjectInfo]:
        """Depth first, entries sorted with ``/`` after directory names, so keys come out in order.

        Sorting a directory ``a`` as ``a/`` puts ``a-b`` (``-`` < ``/``) before ``a/x``
        and ``a0`` after it, exactly as comparing whole keys would.
        """
        try:
            entries = [entry for entry in os.scandir(directory) if not entry.name.startswith(TEMP_PREFIX)]
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._unavailable(exc) from None
        named = sorted(
            [(entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name, entry) for entry in entries],
            key=lambda pair: pair[0],
        )
        for name, entry in named:
            key = base + name
            if name.endswith("/"):
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from self._walk(Path(entry.path), key, prefix)
                continue
            if not key.startswith(prefix):
                continue
            try:
                validate_key(key)
                info = entry.stat()
            except (InvalidKey, FileNotFoundError):
                continue
            except OSError as exc:
                raise self._unavailable(exc) from None
            if stat_mode.S_ISREG(info.st_mode):
                yield ObjectInfo(key=key, size=info.st_size, modified=_modified(info))

    def _make_parents(self, directory: Path) -> None:
        """Create missing directories and make their names durable, top down."""
        missing: list[Path] = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        if not missing:
            return
        missing[0].mkdir(parents=True, exist_ok=True)
        for created in reversed(missing):
            fsync_dir(created.parent)

    @contextmanager
    def _reading(self, key: str) -> Iterator[None]:
        try:
            yield
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(key, self.url) from None
        except OSError as exc:
            raise self._unavailable(exc) from None

    @contextmanager
    def _writing(self, key: str) -> Iterator[None]:
        try:
            yield
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise InvalidKey(
                f"storage key {key!r} clashes with an existing object or prefix in {self.url} "
                "('a' and 'a/b' cannot both be objects)"
            ) from None
        except OSError as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: OSError) -> StorageUnavailable:
        what = f" ({exc.filename})" if exc.filename else ""
        return StorageUnavailable(
            f"local storage {self.root} is not usable: {exc.strerror or exc}{what}; "
            "fix its permissions or free space, or set AMAS_STORAGE_URL to another directory"
        )


def _modified(info: os.stat_result) -> datetime:
    return datetime.fromtimestamp(info.st_mtime, tz=UTC)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` may write less than asked (signals, some filesystems); finish the job."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
