"""Backups on SQLite and PostgreSQL: taken, restored and checked; restores by AMAS and by hand.

The store is filled through the models (tests/plugins/backup.py); each test takes a real backup
into the local storage and restores it into a real scratch database or file. The README's
"restoring with standard tools" blocks are run as written, with zstd, tar, createdb and
pg_restore, and a plain Python for the decryption program.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from sqlalchemy import func, select

from amas.backup import store as store_source
from amas.backup.engine import run_backup, stored_ids
from amas.backup.manifest import manifest_key, parse_manifest
from amas.backup.verify import restore_backup, verify_backup
from amas.config import get_settings
from amas.db.models import Artifact, Backup, BackupStatus, DataSubject
from amas.db.session import create_store_engine, session_scope
from amas.errors import AmasError
from amas.storage import Storage
from amas.storage.base import ObjectInfo
from tests.plugins.backup import BackupEnv
from tests.plugins.postgres import create_scratch_database, drop_database

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


class RecordingStorage:
    """The local storage, remembering the order of ``put`` calls."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner
        self.url = inner.url
        self.puts: list[str] = []

    def put(self, key: str, data: bytes | BinaryIO) -> ObjectInfo:
        info = self._inner.put(key, data)
        self.puts.append(key)
        return info

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def target_url(env: BackupEnv, tmp_path: Path, name: str = "restored") -> str:
    if env.engine.dialect.name == "sqlite":
        return f"sqlite:///{tmp_path / f'{name}.db'}"
    return create_scratch_database("amas_restore")


def rows(url: str) -> dict[str, int]:
    engine = create_store_engine(url)
    try:
        with session_scope(engine) as session:
            return {"subjects": session.scalar(select(func.count()).select_from(DataSubject)) or 0,
                    "artifacts": session.scalar(select(func.count()).select_from(Artifact)) or 0}
    finally:
        engine.dispose()


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_backup_is_written_manifest_last_then_restored_and_verified(
        backup_env: BackupEnv, encrypted: bool, request: pytest.FixtureRequest) -> None:
    if encrypted:
        request.getfixturevalue("encryption_key")
    storage = RecordingStorage(backup_env.storage)
    outcome = run_backup(backup_env.engine, backup_env.settings, storage=storage)  # type: ignore[arg-type]

    assert storage.puts[-1] == manifest_key(outcome.id), "the manifest must be the last object written"
    assert len(storage.puts) == len(outcome.manifest.objects) + 1
    manifest = parse_manifest(backup_env.storage.get(manifest_key(outcome.id)), "manifest")
    assert (manifest.encryption is not None) is encrypted
    assert all(o.key.endswith(".aead") is encrypted for o in manifest.objects)
    assert manifest.tables["data_subjects"].rows == 20 and manifest.tables["artifacts"].rows == 20
    assert manifest.object("artifacts").details["objects"] == 20  # type: ignore[union-attr]
    assert manifest.object("dvc-index").details["objects"] == 1  # type: ignore[union-attr]
    assert manifest.source["store"]["dialect"] == backup_env.engine.dialect.name
    raw = backup_env.storage.get(manifest.objects[0].key)
    assert (b"user0@example.org" in raw) is False  # compressed (and, when encrypted, sealed)

    verdict = verify_backup(outcome.id, backup_env.settings, engine=backup_env.engine)
    assert verdict.ok, verdict.summary
    assert [c.name for c in verdict.checks] == ["manifest", "objects", "fetch", "restore", "digests", "quality",
                                                 "erasures", "artifacts", "dvc-index"]
    with session_scope(backup_env.engine) as session:
        row = session.get(Backup, outcome.id)
        assert row is not None and row.status is BackupStatus.verified
        assert row.rto_seconds is not None and row.rto_seconds > 0
        assert row.verification["ok"] is True and row.size_bytes == manifest.stored_bytes
    if backup_env.engine.dialect.name == "postgresql":
        scratch = [n for n in _databases() if n.startswith("amas_verify_")]
        assert scratch == [], f"scratch databases left behind: {scratch}"


def _databases() -> list[str]:
    import psycopg

    from tests.plugins.postgres import ADMIN_DSN

    with psycopg.connect(ADMIN_DSN) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database")]


def test_restore_fills_an_empty_target_and_refuses_a_full_one_unless_forced(
        backup_env: BackupEnv, tmp_path: Path) -> None:
    outcome = run_backup(backup_env.engine, backup_env.settings)
    url = target_url(backup_env, tmp_path)
    artifacts = tmp_path / "restored-storage"
    try:
        restored = restore_backup(outcome.id, url, backup_env.settings, artifacts_url=str(artifacts))
        assert restored.verdict.ok, restored.verdict.summary
        assert rows(url) == {"subjects": 20, "artifacts": 20}
        assert len([p for p in artifacts.rglob("*") if p.is_file()]) == 20
        assert restored.verdict.restore_seconds is not None

        with pytest.raises(AmasError, match="is not empty; restoring would mix data"):
            restore_backup(outcome.id, url, backup_env.settings)

        forced = restore_backup(outcome.id, url, backup_env.settings, force=True)
        assert forced.verdict.ok, forced.verdict.summary
        assert rows(url) == {"subjects": 20, "artifacts": 20}
    finally:
        if url.startswith("postgresql"):
            drop_database(url)


def test_restore_refuses_a_target_of_the_other_dialect_in_one_line(backup_env: BackupEnv, tmp_path: Path) -> None:
    outcome = run_backup(backup_env.engine, backup_env.settings)
    other = ("postgresql://postgres@127.0.0.1:5432/nowhere" if backup_env.engine.dialect.name == "sqlite"
             else f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(AmasError, match=r"--to: backup \S+ is of a (sqlite|postgresql) store"):
        restore_backup(outcome.id, other, backup_env.settings)


def readme_block(marker: str) -> str:
    """The fenced block that follows ``<!-- marker ... -->`` in the README."""
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {re.escape(marker)}\b.*?-->\s*```\w*\n(.*?)```", text, re.S)
    assert found, f"README has no block after <!-- {marker} -->"
    return found.group(1)


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_backup_restores_with_standard_tools_following_the_readme(
        backup_env: BackupEnv, encrypted: bool, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    key = request.getfixturevalue("encryption_key") if encrypted else None
    outcome = run_backup(backup_env.engine, backup_env.settings)
    copy = tmp_path / "backup"
    shutil.copytree(Path(get_settings().storage_url) / "backups" / outcome.id, copy)
    if key is not None:
        # The README's program, run by a plain interpreter: no AMAS code involved.
        program = tmp_path / "decrypt.py"
        program.write_text(readme_block("decrypt-by-hand"), encoding="utf-8")
        env = {"AMAS_ENCRYPTION_KEY": get_settings().core.encryption_key.get_secret_value(),  # type: ignore[union-attr]
               "PATH": "/usr/bin:/bin"}
        for sealed in copy.glob("*.aead"):
            with sealed.open("rb") as src, (copy / sealed.stem).open("wb") as out:
                subprocess.run([sys.executable, "-I", str(program)], stdin=src, stdout=out, env=env, check=True)
    name = f"amas_by_hand_{outcome.id[-6:]}"
    try:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", readme_block("restore-by-hand")], capture_output=True,
                              text=True, env={"BACKUP": str(copy), "TARGET": name, "PGHOST": "127.0.0.1",
                                              "PGUSER": "postgres", "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        engine = create_store_engine(url)
        try:
            found = store_source.pg_digests(engine)
        finally:
            engine.dispose()
        assert found == outcome.manifest.tables
        assert len([p for p in (copy / "artifacts").rglob("*") if p.is_file()]) == 20
    finally:
        drop_database(f"postgresql://postgres@127.0.0.1:5432/{name}")


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_sqlite_backup_is_a_zstd_file_of_the_database(backup_env: BackupEnv, tmp_path: Path) -> None:
    outcome = run_backup(backup_env.engine, backup_env.settings)
    stored = Path(get_settings().storage_url) / outcome.manifest.objects[0].key
    restored = tmp_path / "amas.db"
    with stored.open("rb") as src, restored.open("wb") as out:
        subprocess.run(["zstd", "-d", "-q"], stdin=src, stdout=out, check=True)
    assert store_source.sqlite_facts(restored).digests == outcome.manifest.tables


def test_two_backups_are_separate_and_each_lists_once(backup_env: BackupEnv) -> None:
    first = run_backup(backup_env.engine, backup_env.settings)
    second = run_backup(backup_env.engine, backup_env.settings)
    assert first.id != second.id
    ids = stored_ids(backup_env.storage)
    assert {first.id, second.id} <= set(ids) and all("manifest.json" in ids[i] for i in (first.id, second.id))
    with session_scope(backup_env.engine) as session:
        assert session.scalar(select(func.count()).select_from(Backup)) == 2


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_verification_sweeps_scratch_copies_that_killed_runs_left(backup_env: BackupEnv) -> None:
    import os
    import time

    import psycopg

    from amas.backup.verify import STALE_SCRATCH_SECONDS, sweep_scratch
    from tests.plugins.postgres import ADMIN_DSN

    stale, fresh = "amas_verify_1000_killed", f"amas_verify_{int(time.time())}_running"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        for name in (stale, fresh):
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    work = backup_env.settings.core.home / "tmp"
    old_dir, new_dir = work / "amas-restore-old", work / "amas-restore-new"
    for directory in (old_dir, new_dir):
        directory.mkdir(parents=True)
        (directory / "store.dump").write_bytes(b"personal data")
    long_ago = time.time() - STALE_SCRATCH_SECONDS - 60
    os.utime(old_dir, (long_ago, long_ago))
    try:
        sweep_scratch(backup_env.settings)
        names = _databases()
        assert stale not in names and fresh in names
        assert not old_dir.exists() and new_dir.exists()
    finally:
        drop_database(f"postgresql://postgres@127.0.0.1:5432/{fresh}")
        drop_database(f"postgresql://postgres@127.0.0.1:5432/{stale}")
