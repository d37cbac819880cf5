"""The storage contract every backend keeps, the errors it raises, and what backends share.

Callers (backups, artifacts, the erasure ledger's evidence) only see ``Storage``: they never
learn whether objects live in a directory or a bucket, so a backup written locally can be
copied to S3 key by key and read back by the same code.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol, runtime_checkable

from amas.errors import AmasError, ServiceUnavailable

CHUNK_SIZE = 1024 * 1024
"""How much a backend reads from a caller's stream at a time: memory stays flat for any size."""

TEMP_PREFIX = ".amas-tmp-"
"""Reserved start of a key segment: backends that stage uploads next to the final object
(``local``) name the staging file with it and ``list`` skips such names, so keys may not use it."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ObjectNotFound(AmasError):
    """The key names no object. Permanent: retrying will not make it appear."""

    def __init__(self, key: str, where: str) -> None:
        super().__init__(f"no object {key!r} in storage {where}")
        self.key = key
        self.where = where

    def __reduce__(self) -> tuple[type[ObjectNotFound], tuple[str, str]]:
        # Prefect persists a failed task's exception; the default pickling would call
        # __init__ with the message alone and fail to load it back.
        return (type(self), (self.key, self.where))


class StorageUnavailable(ServiceUnavailable):
    """The store cannot be reached or written right now (network, permissions, full disk).

    Transient from the caller's point of view: the same call may succeed once an operator
    fixes the cause, so a retry wrapper may retry it. The message names the store and the
    setting to check, and never a secret.
    """


class InvalidKey(AmasError):
    """The key could escape the store, or would not mean the same thing on every backend."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a backend knows about one stored object.

    ``sha256`` is the hex digest when the backend computed it (``put`` always does, as the
    bytes stream past); ``stat`` and ``list`` return ``None`` rather than read the object
    again. ``modified`` is timezone-aware (UTC) when known.
    """

    key: str
    size: int
    sha256: str | None = None
    modified: datetime | None = None


@runtime_checkable
class Storage(Protocol):
    """A flat namespace of immutable-once-written objects addressed by ``/``-separated keys.

    Contract, kept by every backend and checked by ``tests/storage_contract.py``:

    * Keys are validated by ``validate_key`` before anything else happens; a bad key raises
      ``InvalidKey`` from every method, so backends agree on what a key is.
    * ``ObjectNotFound`` is permanent; ``StorageUnavailable`` is transient. Nothing else
      escapes a backend except errors raised by the caller's own source stream in ``put``,
      which propagate unchanged.
    * A key and a key that continues it with ``/`` (``a`` and ``a/b``) must not both be
      used: a directory cannot hold a file and a subdirectory of the same name.
    """

    url: str
    """Where the objects live, as a URL ``storage_for_url`` opens again (no secrets in it)."""

    def put(self, key: str, data: bytes | BinaryIO) -> ObjectInfo:
        """Store ``data`` under ``key``, replacing any existing object.

        Atomic: a concurrent or later reader sees the whole old object (or nothing) until the
        whole new one is in place, never a mix or a prefix. If the source stream raises, the
        error propagates, no object is created and an existing one keeps its content.
        Streams: reads ``data`` in chunks and never holds it all in memory. Returns the size
        and the sha256 computed while streaming.
        """
        ...

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A context manager yielding a readable binary stream of the object, read lazily."""
        ...

    def get(self, key: str) -> bytes:
        """The whole object in memory: for small objects (manifests, ledgers)."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Size and modification time of the object; ``ObjectNotFound`` if there is none."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix`` (a plain string prefix, as in S3).

        Sorted by key (code point order, which is S3's UTF-8 byte order). Never shows
        uploads in progress or staging files. A bad prefix raises ``InvalidKey`` when
        called, before iteration starts.
        """
        ...

    def delete(self, key: str) -> None:
        """Remove the object. Idempotent: deleting a missing key is not an error."""
        ...

    def discard_unfinished(self, prefix: str) -> int:
        """Remove uploads under ``prefix`` that never finished (a writer was killed); how many.

        Staging files on ``local``, unfinished multipart uploads on ``s3``: invisible to
        ``list`` but taking space. Only for a caller that knows no upload is in progress there
        (the backup lock holder, for ``backups/``).
        """
        ...


def exists_by_stat(storage: Storage, key: str) -> bool:
    """``exists`` for backends whose ``stat`` raises ``ObjectNotFound`` for a missing key."""
    try:
        storage.stat(key)
    except ObjectNotFound:
        return False
    return True


def validate_key(key: str) -> str:
    """Return ``key`` if it is safe and portable, else raise ``InvalidKey`` saying why.

    Keys become file paths on the local backend, so anything that could climb out of the
    root (absolute paths, ``..``) or be read differently by another backend or operating
    system (backslashes, empty or ``.`` segments, control characters) is refused.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"storage key must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidKey("storage key is empty")
    _check_segments(key, key.split("/"))
    return key


def validate_prefix(prefix: str) -> str:
    """Like ``validate_key``, but an empty prefix or one ending in ``/`` is allowed."""
    if not isinstance(prefix, str):
        raise InvalidKey(f"storage prefix must be a string, not {type(prefix).__name__}")
    if not prefix:
        return prefix
    segments = prefix.split("/")
    if segments[-1] == "":
        segments.pop()
    _check_segments(prefix, segments)
    return prefix


def _check_segments(key: str, segments: list[str]) -> None:
    if key.startswith("/"):
        raise InvalidKey(f"storage key {key!r} is absolute; keys are relative, like 'backups/2024/db.dump'")
    if "\\" in key:
        raise InvalidKey(f"storage key {key!r} contains a backslash; separate segments with '/'")
    if _CONTROL.search(key):
        raise InvalidKey(f"storage key {key!r} contains a control character")
    for segment in segments:
        if segment == "":
            raise InvalidKey(f"storage key {key!r} has an empty segment (a leading, trailing or doubled '/')")
        if segment in (".", ".."):
            raise InvalidKey(f"storage key {key!r} contains a {segment!r} segment")
        if segment.startswith(TEMP_PREFIX):
            raise InvalidKey(f"storage key {key!r} uses the reserved name prefix {TEMP_PREFIX!r}")


class HashingReader(io.RawIOBase):
    """Wraps the caller's source so size and sha256 come out of the one pass that uploads it.

    ``read(n)`` keeps reading until it has ``n`` bytes or the source ends: upload code
    (s3transfer) takes a short read for the end of the stream. It says it cannot seek so
    that uploaders read it once, front to back, and the digest matches what was stored.
    """

    def __init__(self, source: bytes | BinaryIO) -> None:
        super().__init__()
        self._source: BinaryIO = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
        if not callable(getattr(self._source, "read", None)):
            raise TypeError(f"put() needs bytes or a binary file object, not {type(source).__name__}")
        self._hash = hashlib.sha256()
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self._read_some(CHUNK_SIZE), b""))
        parts: list[bytes] = []
        wanted = size
        while wanted > 0:
            chunk = self._read_some(wanted)
            if not chunk:
                break
            parts.append(chunk)
            wanted -= len(chunk)
        return b"".join(parts)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _read_some(self, size: int) -> bytes:
        chunk = self._source.read(size)
        if chunk is None:
            raise TypeError("put() needs a blocking stream; read() returned None (no data yet)")
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"put() needs a binary stream; read() returned {type(chunk).__name__}")
        chunk = bytes(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)
        return chunk
