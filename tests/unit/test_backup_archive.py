"""The artifact storage as a tar stream: what goes in, what comes back, and what a hostile tar cannot do."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO

import pytest

from amas.backup.artifacts import SPOOL_BYTES, ArchiveIndex, archive_stream, dvc_index, read_archive
from amas.backup.codec import CorruptObject
from amas.storage import LocalStorage, ObjectInfo, StorageUnavailable

pytestmark = pytest.mark.unit

BIG = 20 * 1024 * 1024
LONG_KEY = "reports/" + "very-long-directory-name/" * 6 + "report-with-a-name-longer-than-ustar-allows.pdf"
KEPT = {
    "a.txt": b"alpha\n",
    "empty": b"",
    "nested/deep/dir/file.bin": bytes(range(256)) * 40,
    "nested/deep/other.json": b'{"k": 1}',
    "unicode/r\u00e9sum\u00e9 \u2013 caf\u00e9.txt": "na\u00efve".encode(),
    "dvc.lock": b"not under dvc/",
    "backups.txt": b"not under backups/",
    LONG_KEY: b"long name",
}
EXCLUDED = {
    "backups/20240501T120000Z-abcd/manifest.json": b"{}",
    "backups/20240501T120000Z-abcd/store.dump.zst": b"x" * 1000,
    "dvc/ab/cdef0123": b"dvc object",
    "dvc/files/md5/12/3456": b"another dvc object",
}


def fill(storage: LocalStorage, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        storage.put(key, data)


def contents(storage: LocalStorage) -> dict[str, bytes]:
    return {info.key: storage.get(info.key) for info in storage.list("")}


def files_under(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def archive_of(storage: LocalStorage) -> tuple[bytes, ArchiveIndex]:
    with archive_stream(storage) as (stream, index, thread, errors):
        data = stream.read()
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert errors == []
    return data, index


@pytest.fixture
def big() -> bytes:
    return random.Random(1).randbytes(BIG)


@pytest.mark.timeout(60)
def test_archive_round_trip_through_a_second_storage(tmp_path: Path, big: bytes) -> None:
    assert BIG > SPOOL_BYTES
    source = LocalStorage(tmp_path / "source")
    fill(source, KEPT | EXCLUDED | {"big/blob.bin": big})
    target = LocalStorage(tmp_path / "target")
    with archive_stream(source) as (stream, written, thread, errors):
        read = read_archive(stream, target)  # straight from the pipe, as a restore reads the decoder
        rest = stream.read()
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert errors == []
    assert rest.strip(b"\0") == b"", "only end-of-archive padding may follow the last member"
    expected = KEPT | {"big/blob.bin": big}
    assert contents(target) == expected
    assert read.details() == written.details()
    assert written.objects == len(expected)
    assert written.bytes == sum(len(v) for v in expected.values())
    lines = "".join(f"{key}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\n" for key, data in sorted(expected.items()))
    assert written.sha256 == hashlib.sha256(lines.encode()).hexdigest()


def test_archive_is_a_plain_tar_of_regular_members(tmp_path: Path) -> None:
    source = LocalStorage(tmp_path / "source")
    fill(source, KEPT | EXCLUDED)
    data, index = archive_of(source)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(KEPT)
        assert all(m.isreg() and m.mode == 0o600 for m in members)
        assert {m.name: tar.extractfile(m).read() for m in members} == KEPT  # type: ignore[union-attr]
    assert read_archive(io.BytesIO(data)).details() == index.details()


def test_archive_of_an_empty_storage(tmp_path: Path) -> None:
    source = LocalStorage(tmp_path / "source")
    fill(source, EXCLUDED)
    data, index = archive_of(source)
    assert index.objects == 0 and index.bytes == 0
    assert index.sha256 == hashlib.sha256(b"").hexdigest()
    assert read_archive(io.BytesIO(data)).details() == index.details()


def test_read_archive_without_a_target_only_checks(tmp_path: Path) -> None:
    source = LocalStorage(tmp_path / "source")
    fill(source, KEPT)
    data, index = archive_of(source)
    before = files_under(tmp_path)
    assert read_archive(io.BytesIO(data)).details() == index.details()
    assert files_under(tmp_path) == before


def tar_bytes(*members: tuple[tarfile.TarInfo, bytes | None], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def regular(name: str) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), f"contents of {name}".encode()


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, None


BAD_MEMBERS: dict[str, Callable[[], tuple[tarfile.TarInfo, bytes | None]]] = {
    "parent": lambda: regular("../evil"),
    "absolute": lambda: regular("/etc/passwd"),
    "absolute-in-tmp": lambda: regular("/tmp/amas-archive-test-evil"),
    "climbing": lambda: regular("a/../../b"),
    "backslash": lambda: regular("a\\b"),
    "backslash-climb": lambda: regular("..\\..\\evil"),
    "staging-name": lambda: regular(".amas-tmp-x"),
    "staging-segment": lambda: regular("dir/.amas-tmp-x"),
    "dot-segment": lambda: regular("./a"),
    "double-slash": lambda: regular("a//b"),
    "control-char": lambda: regular("a\nb"),
    "long-climbing": lambda: regular("x/" * 60 + "../" * 61 + "evil"),
    "symlink": lambda: special("link", tarfile.SYMTYPE, "/etc/passwd"),
    "symlink-relative": lambda: special("link", tarfile.SYMTYPE, "../../outside"),
    "hardlink": lambda: special("hard", tarfile.LNKTYPE, "ok.txt"),
    "hardlink-outside": lambda: special("hard", tarfile.LNKTYPE, "/etc/passwd"),
    "directory": lambda: special("dir", tarfile.DIRTYPE),
    "char-device": lambda: special("null", tarfile.CHRTYPE),
    "block-device": lambda: special("disk", tarfile.BLKTYPE),
    "fifo": lambda: special("pipe", tarfile.FIFOTYPE),
}


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
@pytest.mark.parametrize("case", list(BAD_MEMBERS))
def test_read_archive_refuses_a_hostile_member(tmp_path: Path, case: str, fmt: int) -> None:
    bad_info, bad_data = BAD_MEMBERS[case]()
    bad_name = bad_info.name
    data = tar_bytes(regular("ok.txt"), (bad_info, bad_data), regular("after.txt"), fmt=fmt)
    # The archive really carries the hostile member as built (tarfile did not sanitise it on the way).
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        assert tar.getnames()[1] == bad_name
    root = tmp_path / "restore"
    target = LocalStorage(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    before = files_under(tmp_path)
    with pytest.raises(CorruptObject) as caught:
        read_archive(io.BytesIO(data), target, name="artifacts.tar")
    assert str(caught.value).startswith("artifacts.tar: ")
    # Only the good member before it was written, and nothing appeared anywhere else.
    assert files_under(root) == {"ok.txt"}
    assert files_under(tmp_path) - before == {"restore/ok.txt"}
    assert not Path("/tmp/amas-archive-test-evil").exists()


def test_read_archive_refuses_a_device_member_without_a_target() -> None:
    with pytest.raises(CorruptObject, match="not a regular file"):
        read_archive(io.BytesIO(tar_bytes(special("null", tarfile.CHRTYPE))))


def test_read_archive_refuses_a_gnu_longname_climbing_out(tmp_path: Path) -> None:
    name = "../" + "y" * 120
    data = tar_bytes(regular(name), fmt=tarfile.GNU_FORMAT)
    assert b"././@LongLink" in data
    target = LocalStorage(tmp_path / "restore")
    with pytest.raises(CorruptObject, match="unsafe member name"):
        read_archive(io.BytesIO(data), target)
    assert files_under(tmp_path) == {"restore"}


def multi_member_tar() -> tuple[bytes, list[int]]:
    """A tar of three members and the offsets where each member and the end-of-archive block start."""
    buffer = io.BytesIO()
    starts = []
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i, size in enumerate([1000, 0, 700]):
            starts.append(buffer.tell())
            info = tarfile.TarInfo(f"m{i}")
            info.size = size
            tar.addfile(info, io.BytesIO(b"z" * size))
        starts.append(buffer.tell())
    return buffer.getvalue(), starts


def test_a_truncated_tar_stream_is_refused(tmp_path: Path) -> None:
    data, starts = multi_member_tar()
    end = starts[-1]
    assert read_archive(io.BytesIO(data)).objects == 3
    cuts = set(range(0, end + 512, 512)) | {s + d for s in starts for d in (1, 100, 511, 513)} | {end + 511}
    for cut in sorted(c for c in cuts if c < end + 512):
        with pytest.raises(CorruptObject, match="not a valid tar archive"):
            read_archive(io.BytesIO(data[:cut]))
    # At member boundaries the cut is named as such, not passed off as a shorter archive.
    for cut in starts[1:]:
        with pytest.raises(CorruptObject, match="no end-of-archive block"):
            read_archive(io.BytesIO(data[:cut]))
    # One zero block is enough to end an archive; the rest is padding.
    assert read_archive(io.BytesIO(data[:end + 512])).objects == 3


def test_a_truncated_member_leaves_no_object(tmp_path: Path) -> None:
    data, starts = multi_member_tar()
    target = LocalStorage(tmp_path / "restore")
    with pytest.raises(CorruptObject):
        read_archive(io.BytesIO(data[:starts[0] + 512 + 300]), target)
    assert files_under(tmp_path / "restore") == set()


def test_a_damaged_header_after_the_first_member_is_refused() -> None:
    data, starts = multi_member_tar()
    damaged = bytearray(data)
    damaged[starts[2] + 10] ^= 0x01  # inside the name field: the header checksum no longer matches
    with pytest.raises(CorruptObject, match="damaged member header"):
        read_archive(io.BytesIO(bytes(damaged)))
    garbage = data[:starts[1]] + b"\x01" * 512 + data[starts[1]:]
    with pytest.raises(CorruptObject):
        read_archive(io.BytesIO(garbage))


@pytest.mark.parametrize("data", [b"", b"not a tar at all" * 64], ids=["empty", "garbage"])
def test_read_archive_refuses_what_is_not_a_tar(data: bytes) -> None:
    with pytest.raises(CorruptObject, match="not a valid tar archive"):
        read_archive(io.BytesIO(data))


def test_dvc_index_lists_only_dvc_objects(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "source")
    fill(storage, KEPT | {"backups/x/manifest.json": b"{}", "dvcx/not-dvc": b"n"})
    assert dvc_index(storage) is None
    fill(storage, EXCLUDED)
    index = dvc_index(storage)
    assert index is not None and index.endswith(b"\n")
    entries = [json.loads(line) for line in index.decode().splitlines()]
    assert entries == [{"key": "dvc/ab/cdef0123", "size": 10}, {"key": "dvc/files/md5/12/3456", "size": 18}]


class FailingStorage:
    """A LocalStorage whose ``open`` fails for one key, or whose stream fails after some bytes."""

    def __init__(self, inner: LocalStorage, bad_key: str, *, mid_read: bool = False) -> None:
        self._inner = inner
        self._bad_key = bad_key
        self._mid_read = mid_read
        self.url = inner.url

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self._inner.list(prefix)

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        if key != self._bad_key:
            return self._inner.open(key)
        if not self._mid_read:
            raise StorageUnavailable(f"cannot read {key}")
        return self._failing_stream(key)

    @contextmanager
    def _failing_stream(self, key: str) -> Iterator[BinaryIO]:
        class Broken(io.RawIOBase):
            sent = False

            def readable(self) -> bool:
                return True

            def read(self, size: int = -1) -> bytes:
                if not self.sent:
                    self.sent = True
                    return b"first bytes"
                raise OSError(5, "Input/output error", key)

        yield Broken()  # type: ignore[misc]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mid_read", [False, True], ids=["open-fails", "read-fails"])
def test_a_source_error_is_surfaced_and_the_stream_ends(tmp_path: Path, mid_read: bool) -> None:
    inner = LocalStorage(tmp_path / "source")
    fill(inner, KEPT | {"big/blob.bin": os.urandom(3 * 1024 * 1024)})
    source = FailingStorage(inner, "nested/deep/dir/file.bin", mid_read=mid_read)
    with archive_stream(source) as (stream, index, thread, errors):  # type: ignore[arg-type]
        data = stream.read()  # returns: the writer closed its end of the pipe
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert len(errors) == 1
        assert isinstance(errors[0], StorageUnavailable if not mid_read else OSError)
    # Members before the failing key made it into the stream, but it is no complete archive.
    assert index.objects == sorted(KEPT | {"big/blob.bin": b""}).index("nested/deep/dir/file.bin")
    assert b"a.txt" in data
    with pytest.raises(CorruptObject, match="no end-of-archive block"):
        read_archive(io.BytesIO(data))


@pytest.mark.timeout(30)
def test_a_reader_that_stops_early_does_not_hang_the_writer(tmp_path: Path, big: bytes) -> None:
    source = LocalStorage(tmp_path / "source")
    fill(source, {"big/blob.bin": big, "z.txt": b"after"})
    threads: list[threading.Thread] = []
    with pytest.raises(RuntimeError, match="consumer failed"), archive_stream(source) as (stream, _, thread, errors):
        threads.append(thread)
        assert len(stream.read(4096)) == 4096
        raise RuntimeError("consumer failed")
    assert not threads[0].is_alive()
    assert errors == []
