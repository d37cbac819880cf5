"""The artifact storage as a backup source: every object, streamed into one tar, and back.

What is included: every object of the AMAS storage except ``backups/`` (the backups
themselves) and ``dvc/`` (the DVC remote, content-addressed and large: the backup keeps its
index, ``dvc_index``, instead). The tar is written by a thread into a pipe that the encoder
reads, so no object and no archive is ever whole in memory (objects up to 8 MiB are
spooled in memory to learn their exact size, larger ones in a temporary file).

Reading back is safe by construction: only regular members are accepted, every member name
must be a valid storage key (no absolute path, no ``..``, no backslash, no control character)
and objects are written through ``Storage.put``, never to a path of the archive's choosing.
The index digest (sha256 over ``key\\tsize\\tsha256\\n`` lines in archive order) lets
verification prove the archive holds exactly what was backed up.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, BinaryIO

from amas.backup.codec import CorruptObject
from amas.storage import Storage
from amas.storage.base import InvalidKey, validate_key

EXCLUDED_PREFIXES = ("backups/", "dvc/")
DVC_PREFIX = "dvc/"
SPOOL_BYTES = 8 * 1024 * 1024
COPY_CHUNK = 1024 * 1024


@dataclass
class ArchiveIndex:
    objects: int = 0
    bytes: int = 0
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256)

    def add(self, key: str, size: int, sha256: str) -> None:
        self.objects += 1
        self.bytes += size
        self._hash.update(f"{key}\t{size}\t{sha256}\n".encode())

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def details(self) -> dict[str, object]:
        return {"objects": self.objects, "bytes": self.bytes, "index_sha256": self.sha256}


def included(key: str) -> bool:
    return not key.startswith(EXCLUDED_PREFIXES)


def _copy_hashing(source: BinaryIO, target: IO[bytes]) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(COPY_CHUNK):
        digest.update(chunk)
        target.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


@contextmanager
def archive_stream(storage: Storage) -> Iterator[tuple[IO[bytes], ArchiveIndex, threading.Thread, list[BaseException]]]:
    """Yield a readable tar stream of the storage's objects, the index it fills, its writer and its errors.

    The caller reads to the end, joins the thread and raises the first error, if any.
    """
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb")
    index = ArchiveIndex()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with os.fdopen(write_fd, "wb") as pipe, tarfile.open(fileobj=pipe, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for info in storage.list(""):
                    if not included(info.key):
                        continue
                    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool, storage.open(info.key) as src:
                        size, sha = _copy_hashing(src, spool)
                        spool.seek(0)
                        member = tarfile.TarInfo(info.key)
                        member.size = size
                        member.mode = 0o600
                        member.mtime = int(info.modified.timestamp()) if info.modified else 0
                        tar.addfile(member, spool)
                    index.add(info.key, size, sha)
        except BrokenPipeError:
            pass  # the reader stopped (it failed, and says why)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=write, name="backup-artifacts", daemon=True)
    thread.start()
    try:
        yield reader, index, thread, errors
    finally:
        reader.close()
        thread.join()


def read_archive(stream: BinaryIO, target: Storage | None = None, *, name: str = "artifacts") -> ArchiveIndex:
    """Walk a tar stream, checking every member; with ``target``, put each object there."""
    index = ArchiveIndex()
    try:
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=_CheckedTarInfo) as tar:
            for member in tar:
                if not member.isreg():
                    raise CorruptObject(f"{name}: member {member.name!r} is not a regular file")
                try:
                    key = validate_key(member.name)
                except InvalidKey as exc:
                    raise CorruptObject(f"{name}: unsafe member name refused ({exc})") from None
                source = tar.extractfile(member)
                if source is None:
                    raise CorruptObject(f"{name}: member {member.name!r} has no data")
                hasher = _HashingSource(source)
                if target is not None:
                    target.put(key, hasher)  # type: ignore[arg-type]
                else:
                    while hasher.read(COPY_CHUNK):
                        pass
                if hasher.size != member.size:
                    raise CorruptObject(f"{name}: member {member.name!r} is truncated")
                index.add(key, hasher.size, hasher.sha256)
    except tarfile.TarError as exc:
        raise CorruptObject(f"{name}: not a valid tar archive ({exc})") from None
    return index


class _CheckedTarInfo(tarfile.TarInfo):
    """Refuses a tar that stops without its end-of-archive block.

    ``tarfile`` ends the member list quietly when a header after the first is missing, short or
    damaged, so a stream cut at a member boundary (or a writer that failed half way) would read
    as a shorter, valid archive.
    """

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(archive)
        except tarfile.EOFHeaderError:
            raise  # a zero block: the end-of-archive marker
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError) as exc:
            raise tarfile.ReadError(f"truncated: the archive has no end-of-archive block ({exc})") from None
        except tarfile.InvalidHeaderError as exc:
            raise tarfile.ReadError(f"damaged member header at byte {archive.offset} ({exc})") from None


class _HashingSource:
    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._hash = hashlib.sha256()
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def read(self, size: int = -1) -> bytes:
        chunk = self._source.read(size)
        self._hash.update(chunk)
        self.size += len(chunk)
        return chunk


def dvc_index(storage: Storage) -> bytes | None:
    """JSON lines of the DVC remote's objects (key, size) under ``dvc/``, or None when it has none."""
    lines = [json.dumps({"key": info.key, "size": info.size}, sort_keys=True) for info in storage.list(DVC_PREFIX)]
    if not lines:
        return None
    return ("\n".join(lines) + "\n").encode()
