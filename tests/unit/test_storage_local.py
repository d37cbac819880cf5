"""The storage contract on the directory backend, plus what only a directory can get wrong."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest

from amas.config import StorageSettings, load_settings
from amas.errors import ConfigError
from amas.storage import (
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    Storage,
    StorageUnavailable,
    open_storage,
    storage_for_url,
    validate_key,
    validate_prefix,
)
from amas.storage.base import TEMP_PREFIX
from tests.storage_contract import StorageContract

pytestmark = pytest.mark.unit


@pytest.fixture
def storage_settings() -> StorageSettings:
    return StorageSettings()


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


class TestLocalContract(StorageContract):
    def assert_no_leftovers(self, storage: Storage) -> None:
        assert isinstance(storage, LocalStorage)
        staged = [path for path in storage.root.rglob("*") if path.name.startswith(TEMP_PREFIX)]
        assert staged == []

    def leave_unfinished(self, storage: Storage, key: str) -> None:
        assert isinstance(storage, LocalStorage)
        directory = (storage.root / key).parent
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{TEMP_PREFIX}killed").write_bytes(b"half an upload")

    def assert_stored_in_parts(self, storage: Storage, key: str, parts: int) -> None:
        # A file is written whole; what matters is that it is the final name, complete, and
        # private to its owner, with no staging file beside it.
        assert isinstance(storage, LocalStorage)
        path = storage.root / key
        assert path.stat().st_size == storage.stat(key).size
        assert path.stat().st_mode & 0o077 == 0
        self.assert_no_leftovers(storage)


def test_staging_file_is_invisible_while_it_exists(storage: LocalStorage) -> None:
    storage.put("dir/real", b"x")
    (storage.root / "dir" / f"{TEMP_PREFIX}abc").write_bytes(b"half an upload")
    assert [info.key for info in storage.list()] == ["dir/real"]


def test_key_and_prefix_of_another_key_clash(storage: LocalStorage) -> None:
    storage.put("a", b"file")
    with pytest.raises(InvalidKey, match="clashes"):
        storage.put("a/b", b"needs a directory named a")
    storage.put("c/d", b"x")
    with pytest.raises(InvalidKey, match="clashes"):
        storage.put("c", b"needs a file named c")
    assert storage.get("a") == b"file"


def test_root_that_is_a_file_is_unavailable(tmp_path: Path) -> None:
    root = tmp_path / "not-a-directory"
    root.write_text("oops")
    with pytest.raises(StorageUnavailable, match="AMAS_STORAGE_URL") as caught:
        LocalStorage(root)
    assert str(root) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_root_below_a_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("oops")
    with pytest.raises(StorageUnavailable, match="AMAS_STORAGE_URL"):
        LocalStorage(tmp_path / "file" / "store")


def test_read_only_root_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = LocalStorage(tmp_path / "store")
    storage.put("before", b"readable")
    storage.root.chmod(0o500)
    try:
        if os.geteuid() == 0:
            # Root ignores permission bits, so let the kernel's answer for a read-only
            # directory come from mkstemp, the first write a put makes.
            def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(storage.root))

            monkeypatch.setattr("amas.storage.local.tempfile.mkstemp", refuse)
        with pytest.raises(StorageUnavailable) as caught:
            storage.put("after", b"x")
        message = str(caught.value)
        assert str(storage.root) in message and "AMAS_STORAGE_URL" in message
        assert "Permission denied" in message and "\n" not in message
        assert storage.get("before") == b"readable"
        assert [info.key for info in storage.list()] == ["before"]
    finally:
        storage.root.chmod(0o700)


@pytest.mark.parametrize(
    ("url", "expected"),
    [("{root}", "{root}"), ("file://{root}", "{root}"), ("file://localhost{root}", "{root}"),
     ("file://{root}/with%20space", "{root}/with space")],
)
def test_local_urls(tmp_path: Path, storage_settings: StorageSettings, url: str, expected: str) -> None:
    opened = storage_for_url(url.format(root=tmp_path), storage_settings)
    assert isinstance(opened, LocalStorage)
    assert opened.root == Path(expected.format(root=tmp_path))


def test_file_url_with_a_host_is_refused(storage_settings: StorageSettings) -> None:
    with pytest.raises(ConfigError, match="host"):
        storage_for_url("file://fileserver/share", storage_settings)


def test_unknown_scheme_lists_the_valid_ones(storage_settings: StorageSettings) -> None:
    with pytest.raises(ConfigError) as caught:
        storage_for_url("ftp://example.org/backups", storage_settings)
    message = str(caught.value)
    assert "'ftp'" in message and "file://" in message and "s3://" in message


def test_open_storage_defaults_to_amas_home(tmp_path: Path) -> None:
    settings = load_settings(core={"home": tmp_path / "home"})
    storage = open_storage(settings)
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path / "home" / "storage"


def test_open_storage_follows_the_storage_url(tmp_path: Path) -> None:
    settings = load_settings(storage={"url": str(tmp_path / "elsewhere")})
    storage = open_storage(settings)
    assert isinstance(storage, LocalStorage) and storage.root == tmp_path / "elsewhere"


def test_errors_survive_pickling_for_prefect_task_states(storage: LocalStorage) -> None:
    with pytest.raises(ObjectNotFound) as caught:
        storage.get("missing/key")
    loaded = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(loaded, ObjectNotFound)
    assert (loaded.key, str(loaded)) == ("missing/key", str(caught.value))
    unavailable = pickle.loads(pickle.dumps(StorageUnavailable("storage down")))
    assert str(unavailable) == "storage down"


@pytest.mark.parametrize("key", ["a", "a/b/c.txt", "with space/ünïcode", "a..b", ".hidden", "x/..y"])
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize("prefix", ["", "a", "a/", "a/b/", "a/b"])
def test_valid_prefixes(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix
