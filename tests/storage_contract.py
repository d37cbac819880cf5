"""The one contract every storage backend must keep (after restic's backend/test/suite.go).

A backend's test module subclasses ``StorageContract`` and provides three fixtures:
``storage`` (an empty store whose S3 part size is lowered to 5 MiB), ``storage_settings``
(the ``StorageSettings`` that reopen it by URL), and implements ``assert_no_leftovers`` and
``assert_stored_in_parts`` with what only that backend can observe. This module's name does
not start with ``test_``, so pytest collects it only through those subclasses.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from datetime import datetime

import pytest

from amas.config import StorageSettings
from amas.storage import InvalidKey, ObjectInfo, ObjectNotFound, Storage, storage_for_url

MiB = 1024 * 1024
PART_SIZE = 5 * MiB
LARGE_SIZE = 12 * MiB

BAD_KEYS = [
    pytest.param("", id="empty"),
    pytest.param("/etc/passwd", id="absolute"),
    pytest.param("..", id="dotdot"),
    pytest.param("a/../../b", id="dotdot-inside"),
    pytest.param("./a", id="dot-segment"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("a//b", id="empty-segment"),
    pytest.param("a/", id="trailing-slash"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a\nb", id="newline"),
    pytest.param("a\x7fb", id="del"),
    pytest.param("dir/.amas-tmp-123", id="reserved-temp-name"),
]


class SourceFailed(Exception):
    """Raised by a test's source stream: the backend must let it through untouched."""


class GeneratedStream(io.RawIOBase):
    """``size`` deterministic bytes made on demand, so a large put never exists in memory.

    Records the largest read it was asked for (a backend that slurps the whole stream
    shows up there), can raise ``SourceFailed`` once ``fail_at`` bytes have been served,
    and can call ``on_half`` once when half the bytes have been served.
    """

    def __init__(self, size: int, *, fail_at: int | None = None, on_half: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.size = size
        self.position = 0
        self.largest_read = 0
        self._fail_at = fail_at
        self._on_half = on_half

    @staticmethod
    def expected(size: int) -> tuple[str, bytes]:
        """sha256 of the whole stream and its first KiB, computed independently of any backend."""
        digest = hashlib.sha256()
        stream = GeneratedStream(size)
        while chunk := stream.read(MiB):
            digest.update(chunk)
        return digest.hexdigest(), GeneratedStream(size).read(1024)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = len(buffer)
        self.largest_read = max(self.largest_read, want)
        if self._fail_at is not None and self.position >= self._fail_at:
            raise SourceFailed(f"source broke after {self.position} bytes")
        if self._on_half is not None and self.position >= self.size // 2:
            callback, self._on_half = self._on_half, None
            callback()
        count = min(want, self.size - self.position)
        if self._fail_at is not None:
            count = min(count, max(self._fail_at - self.position, 0))
        # Each byte depends only on its offset, so any pattern of reads yields the same stream.
        position, end, filled = self.position, self.position + count, 0
        while position < end:
            block, skip = divmod(position, 4096)
            pattern = hashlib.sha256(block.to_bytes(8, "big")).digest() * 128
            n = min(4096 - skip, end - position)
            buffer[filled : filled + n] = pattern[skip : skip + n]
            position += n
            filled += n
        self.position += count
        return count


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _keys(storage: Storage, prefix: str = "") -> list[str]:
    return [info.key for info in storage.list(prefix)]


class StorageContract:
    """Behaviour every ``Storage`` must show; subclasses bind it to one backend."""

    def assert_no_leftovers(self, storage: Storage) -> None:
        """No staging files or unfinished uploads remain after a failed put."""
        raise NotImplementedError

    def assert_stored_in_parts(self, storage: Storage, key: str, parts: int) -> None:
        """The backend's own evidence that a large object was written the way it claims."""
        raise NotImplementedError

    def leave_unfinished(self, storage: Storage, key: str) -> None:
        """What a writer killed half way through uploading ``key`` leaves behind."""
        raise NotImplementedError

    def test_discard_unfinished_removes_only_unfinished_uploads_under_the_prefix(self, storage: Storage) -> None:
        storage.put("keep/done", b"x")
        storage.put("other/done", b"y")
        self.leave_unfinished(storage, "keep/half")
        self.leave_unfinished(storage, "other/half")
        assert storage.discard_unfinished("keep/") == 1
        assert _keys(storage) == ["keep/done", "other/done"]
        assert storage.discard_unfinished("") == 1
        assert storage.discard_unfinished("") == 0
        self.assert_no_leftovers(storage)
        assert _keys(storage) == ["keep/done", "other/done"]

    def test_is_a_storage(self, storage: Storage) -> None:
        assert isinstance(storage, Storage)
        assert isinstance(storage.url, str) and storage.url

    def test_bytes_round_trip(self, storage: Storage) -> None:
        data = b"hello, storage\x00\xff" * 100
        info = storage.put("docs/hello.bin", data)
        assert info == ObjectInfo("docs/hello.bin", len(data), _sha(data), info.modified)
        assert storage.get("docs/hello.bin") == data

    def test_stream_round_trip(self, storage: Storage) -> None:
        data = bytes(range(256)) * 4096
        info = storage.put("stream.bin", io.BytesIO(data))
        assert (info.size, info.sha256) == (len(data), _sha(data))
        with storage.open("stream.bin") as stream:
            pieces = []
            while piece := stream.read(10_000):
                pieces.append(piece)
        assert b"".join(pieces) == data

    def test_empty_object(self, storage: Storage) -> None:
        info = storage.put("empty", b"")
        assert (info.size, info.sha256) == (0, _sha(b""))
        assert storage.get("empty") == b""
        assert storage.stat("empty").size == 0

    def test_unicode_and_spaces_in_keys(self, storage: Storage) -> None:
        key = "subjects/Zoë Müller/report (1).txt"
        storage.put(key, b"x")
        assert storage.get(key) == b"x"
        assert _keys(storage) == [key]

    def test_overwrite_replaces(self, storage: Storage) -> None:
        storage.put("k", b"first version, longer")
        info = storage.put("k", b"second")
        assert info.sha256 == _sha(b"second")
        assert storage.get("k") == b"second"
        assert storage.stat("k").size == len(b"second")
        assert _keys(storage) == ["k"]

    def test_list_is_sorted_and_filters_by_prefix(self, storage: Storage) -> None:
        # '-' sorts before '/', and '0' after it: a backend walking directories must still
        # return whole keys in order.
        keys = ["b/2", "a0", "a/b", "a-c", "a/a/z", "c", "a.txt", "b/10"]
        for index, key in enumerate(keys):
            storage.put(key, b"x" * index)
        assert _keys(storage) == sorted(keys)
        assert _keys(storage, "a/") == ["a/a/z", "a/b"]
        assert _keys(storage, "a") == sorted(k for k in keys if k.startswith("a"))
        assert _keys(storage, "b/1") == ["b/10"]
        assert _keys(storage, "a/a/z") == ["a/a/z"]
        assert _keys(storage, "nothing/") == []
        sizes = {info.key: info.size for info in storage.list()}
        assert sizes == {key: index for index, key in enumerate(keys)}

    def test_exists_and_stat(self, storage: Storage) -> None:
        assert storage.exists("x/y") is False
        storage.put("x/y", b"12345")
        assert storage.exists("x/y") is True
        assert storage.exists("x") is False
        info = storage.stat("x/y")
        assert (info.key, info.size) == ("x/y", 5)
        assert info.modified is None or (isinstance(info.modified, datetime) and info.modified.tzinfo is not None)

    def test_delete_is_idempotent(self, storage: Storage) -> None:
        storage.put("gone", b"data")
        storage.put("kept", b"data")
        storage.delete("gone")
        assert storage.exists("gone") is False
        storage.delete("gone")
        storage.delete("never/existed")
        assert _keys(storage) == ["kept"]

    def test_missing_key(self, storage: Storage) -> None:
        with pytest.raises(ObjectNotFound, match="nope"):
            storage.get("nope")
        with pytest.raises(ObjectNotFound):
            storage.stat("nope")
        with pytest.raises(ObjectNotFound):
            with storage.open("nope"):
                pass
        storage.put("dir/file", b"x")
        with pytest.raises(ObjectNotFound):
            storage.get("dir")

    @pytest.mark.parametrize("key", BAD_KEYS)
    def test_bad_keys_are_refused_everywhere(self, storage: Storage, key: str) -> None:
        calls: list[Callable[[], object]] = [
            lambda: storage.put(key, b"x"),
            lambda: storage.get(key),
            lambda: storage.exists(key),
            lambda: storage.stat(key),
            lambda: storage.delete(key),
            lambda: storage.open(key),
        ]
        for call in calls:
            with pytest.raises(InvalidKey):
                call()
        assert _keys(storage) == []

    @pytest.mark.parametrize("prefix", ["/", "/a", "../", "a/../b", "a\\b", "a//"])
    def test_bad_list_prefix_is_refused_before_iterating(self, storage: Storage, prefix: str) -> None:
        with pytest.raises(InvalidKey):
            storage.list(prefix)

    def test_text_stream_is_refused(self, storage: Storage) -> None:
        with pytest.raises(TypeError):
            storage.put("text", io.StringIO("not bytes"))  # type: ignore[arg-type]
        assert storage.exists("text") is False

    def test_large_streamed_put(self, storage: Storage) -> None:
        sha, head = GeneratedStream.expected(LARGE_SIZE)
        source = GeneratedStream(LARGE_SIZE)
        info = storage.put("big/object.bin", source)
        assert (info.key, info.size, info.sha256) == ("big/object.bin", LARGE_SIZE, sha)
        assert 0 < source.largest_read <= PART_SIZE, "the backend read the source in one gulp"
        assert storage.stat("big/object.bin").size == LARGE_SIZE
        digest = hashlib.sha256()
        with storage.open("big/object.bin") as stream:
            assert stream.read(1024) == head
            digest.update(head)
            while chunk := stream.read(MiB):
                digest.update(chunk)
        assert digest.hexdigest() == sha
        self.assert_stored_in_parts(storage, "big/object.bin", parts=-(-LARGE_SIZE // PART_SIZE))

    @pytest.mark.parametrize("fail_at", [1024, 7 * MiB], ids=["single-request", "multipart"])
    def test_failed_put_leaves_nothing(self, storage: Storage, fail_at: int) -> None:
        storage.put("other", b"unrelated")
        with pytest.raises(SourceFailed):
            storage.put("new/object", GeneratedStream(LARGE_SIZE, fail_at=fail_at))
        assert storage.exists("new/object") is False
        assert _keys(storage) == ["other"]
        self.assert_no_leftovers(storage)

    @pytest.mark.parametrize("fail_at", [1024, 7 * MiB], ids=["single-request", "multipart"])
    def test_failed_overwrite_keeps_old_content(self, storage: Storage, fail_at: int) -> None:
        storage.put("precious", b"old content")
        with pytest.raises(SourceFailed):
            storage.put("precious", GeneratedStream(LARGE_SIZE, fail_at=fail_at))
        assert storage.get("precious") == b"old content"
        assert _keys(storage) == ["precious"]
        self.assert_no_leftovers(storage)

    def test_readers_see_old_object_while_put_is_in_progress(self, storage: Storage) -> None:
        storage.put("live", b"old content")
        seen: list[tuple[bytes, list[str]]] = []
        source = GeneratedStream(LARGE_SIZE, on_half=lambda: seen.append((storage.get("live"), _keys(storage))))
        info = storage.put("live", source)
        assert seen == [(b"old content", ["live"])]
        assert storage.stat("live").size == info.size == LARGE_SIZE

    def test_reopens_from_its_url(self, storage: Storage, storage_settings: StorageSettings) -> None:
        storage.put("via/url", b"same store")
        again = storage_for_url(storage.url, storage_settings)
        assert type(again) is type(storage)
        assert again.url == storage.url
        assert again.get("via/url") == b"same store"

