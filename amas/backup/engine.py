"""Taking a backup: the store, the artifacts and the DVC remote's index, streamed; the manifest last.

``run_backup`` holds the backup lock (a PostgreSQL advisory lock, or a file lock next to a
SQLite store), so only one backup runs at a time. It first removes what earlier runs left
without a manifest (a backup killed midway: it never existed) and adds to the catalog any
complete backup the catalog lacks (one killed between its manifest and its catalog row). Then:

    backups/<id>/store.dump.zst[.aead]     pg_dump custom format, or the SQLite file
    backups/<id>/artifacts.tar.zst[.aead]  every object of the AMAS storage but backups/ and dvc/
    backups/<id>/dvc-index.jsonl.zst[.aead] the DVC remote's object list, when it has one
    backups/<id>/manifest.json             written last: the commit point

Each object streams source -> zstd -> AES-256-GCM (when a key is configured) -> storage, and
its size and sha256 come out of the same pass. Only once the manifest is stored does the
catalog get a row: a run that fails (storage down, pg_dump error) leaves no catalog entry and
its partial objects are deleted now or by the next run. S3 requests, multipart parts included,
are retried by botocore; the small objects are retried here too (tenacity) and a whole run is
retried by the flow.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Engine, func, select
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from amas.backup import artifacts as artifacts_source
from amas.backup import store as store_source
from amas.backup.codec import CHUNK_SIZE, encode, key_id
from amas.backup.manifest import (
    PREFIX,
    Encryption,
    Manifest,
    ObjectEntry,
    backup_prefix,
    manifest_key,
    parse_manifest,
)
from amas.config import Settings, decode_key
from amas.db.audit import append_event
from amas.db.models import Backup, BackupStatus, utcnow
from amas.db.session import session_scope
from amas.errors import AmasError, ConfigError
from amas.fsutil import exclusive_lock
from amas.storage import Storage, open_storage, storage_for_url
from amas.storage.base import ObjectInfo, StorageUnavailable

LOCK_KEY = 0x414D_4153_0042_4B50  # "AMAS" "BKP"
SQLITE_COPY_PREFIX = "amas-backup-"
Progress = Callable[[str, int], None]


def backup_storage(settings: Settings) -> Storage:
    """Where backups live: AMAS_BACKUP_URL, or the AMAS storage itself (under ``backups/``)."""
    if settings.backup.url:
        return storage_for_url(settings.backup.url, settings.storage)
    return open_storage(settings)


def backup_key(settings: Settings) -> bytes | None:
    """The AES-256-GCM key when backups are encrypted (AMAS_BACKUP_ENCRYPT, default: when a key is set)."""
    secret = settings.core.encryption_key
    if settings.backup.encrypt is False:
        return None
    if secret is None:
        if settings.backup.encrypt:
            raise ConfigError("AMAS_BACKUP_ENCRYPT is true but AMAS_ENCRYPTION_KEY is not set; "
                              "set it to base64 of 32 random bytes")
        return None
    return decode_key(secret, "AMAS_ENCRYPTION_KEY")


def new_backup_id(now: datetime) -> str:
    """Sortable by time: ``20261126T020000Z-1a2b3c``."""
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@contextlib.contextmanager
def backup_lock(engine: Engine, settings: Settings) -> Iterator[None]:
    """One backup at a time per store; a second one is refused at once, naming why."""
    busy = "another backup of this store is running; wait for it to finish"
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if not conn.execute(select(func.pg_try_advisory_lock(LOCK_KEY))).scalar():
                raise AmasError(busy)
            try:
                yield
            finally:
                conn.execute(select(func.pg_advisory_unlock(LOCK_KEY)))
        return
    path = store_source.sqlite_path(engine)
    with exclusive_lock(path.with_name(path.name + ".backup.lock"), busy):
        yield


_retry_small = retry(retry=retry_if_exception_type(StorageUnavailable), stop=stop_after_attempt(4),
                     wait=wait_exponential(multiplier=0.5, max=8), reraise=True)


@_retry_small
def put_small(storage: Storage, key: str, data: bytes) -> ObjectInfo:
    return storage.put(key, data)


@_retry_small
def get_small(storage: Storage, key: str) -> bytes:
    return storage.get(key)


def stored_ids(storage: Storage) -> dict[str, set[str]]:
    """Backup id -> names of its objects, from a listing of ``backups/``."""
    found: dict[str, set[str]] = {}
    for info in storage.list(PREFIX):
        parts = info.key[len(PREFIX):].split("/", 1)
        if len(parts) == 2:
            found.setdefault(parts[0], set()).add(parts[1])
    return found


def delete_backup_objects(storage: Storage, backup_id: str) -> int:
    """Delete a backup's objects, the manifest first (so it stops existing before it is partial)."""
    prefix = backup_prefix(backup_id)
    keys = [info.key for info in storage.list(prefix)]
    keys.sort(key=lambda k: not k.endswith("/manifest.json"))
    for key in keys:
        storage.delete(key)
    return len(keys)


def cleanup_incomplete(engine: Engine, storage: Storage, *, actor: str) -> list[str]:
    """Remove what killed or failed runs left: backups without a manifest and unfinished uploads.

    Only the backup lock holder calls this, so nothing under ``backups/`` is being written. A
    catalogued backup whose manifest is gone is marked deleted: it can no longer be restored.
    """
    removed = [bid for bid, names in sorted(stored_ids(storage).items()) if "manifest.json" not in names]
    for bid in removed:
        count = delete_backup_objects(storage, bid)
        with session_scope(engine) as session:
            row = session.get(Backup, bid)
            if row is not None and row.status is not BackupStatus.deleted:
                row.status = BackupStatus.deleted
            append_event(session, actor=actor, action="backup.incomplete_removed", entity_type="backup",
                         entity_id=bid, details={"objects": count, "was_catalogued": row is not None})
    discarded = storage.discard_unfinished(PREFIX)
    if discarded:
        with session_scope(engine) as session:
            append_event(session, actor=actor, action="backup.unfinished_uploads_discarded", entity_type="backup",
                         details={"uploads": discarded})
    return removed


def sweep_sqlite_copies(engine: Engine) -> None:
    """Delete snapshot copies a killed SQLite backup left next to the store (they hold personal data)."""
    source = store_source.sqlite_path(engine)
    for stale in source.parent.glob(f"{SQLITE_COPY_PREFIX}*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def catalog_row(manifest: Manifest, storage: Storage, manifest_sha256: str) -> Backup:
    return Backup(id=manifest.id, source=f"store:{manifest.source['store']['dialect']}",
                  storage_uri=f"{storage.url.rstrip('/')}/{backup_prefix(manifest.id)}",
                  status=BackupStatus.completed, started_at=manifest.started_at, finished_at=manifest.finished_at,
                  size_bytes=manifest.stored_bytes, manifest_sha256=manifest_sha256,
                  erasure_ledger_position=manifest.erasure_ledger_position)


def sync_catalog(engine: Engine, storage: Storage) -> list[str]:
    """Add complete backups found in storage but missing from the catalog; their ids."""
    complete = [bid for bid, names in stored_ids(storage).items() if "manifest.json" in names]
    with session_scope(engine) as session:
        known = set(session.scalars(select(Backup.id).where(Backup.id.in_(complete)))) if complete else set()
        added: list[str] = []
        for bid in sorted(set(complete) - known):
            data = get_small(storage, manifest_key(bid))
            try:
                manifest = parse_manifest(data, manifest_key(bid))
            except AmasError:
                continue  # listed by verify as unreadable; not a catalog entry
            session.add(catalog_row(manifest, storage, hashlib.sha256(data).hexdigest()))
            added.append(bid)
    return added


@dataclass
class BackupOutcome:
    id: str
    manifest: Manifest
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    removed_incomplete: list[str] = field(default_factory=list)
    catalogued: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "seconds": round(self.seconds, 3), "timings": self.timings,
                "stored_bytes": self.manifest.stored_bytes,
                "objects": [o.model_dump() for o in self.manifest.objects],
                "tables": {k: v.rows for k, v in self.manifest.tables.items()},
                "encrypted": self.manifest.encryption is not None,
                "erasure_ledger_position": self.manifest.erasure_ledger_position,
                "removed_incomplete": self.removed_incomplete, "catalogued": self.catalogued}


class _Progress:
    """Counts plaintext bytes as they are read and reports them every few MiB."""

    def __init__(self, source: BinaryIO, name: str, progress: Progress | None) -> None:
        self._source = source
        self._name = name
        self._progress = progress
        self._reported = 0
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._source.read(size)
        self.size += len(chunk)
        if self._progress is not None and (self.size - self._reported >= 8 * CHUNK_SIZE or not chunk):
            self._reported = self.size
            self._progress(self._name, self.size)
        return chunk


def _put_stream(storage: Storage, key: str, source: BinaryIO, *, name: str, fmt: str, settings: Settings,
                crypt_key: bytes | None, progress: Progress | None, details: dict[str, Any] | None = None,
                ) -> ObjectEntry:
    counted = _Progress(source, name, progress)
    stream, plain = encode(counted, level=settings.backup.compression_level,  # type: ignore[arg-type]
                           threads=settings.backup.threads, key=crypt_key)
    info = storage.put(key, stream)
    return ObjectEntry(name=name, key=key, format=fmt, size=info.size, sha256=info.sha256 or "",
                       plain_size=plain.size, details=details or {})


def _object_key(backup_id: str, stem: str, encrypted: bool) -> str:
    return f"{backup_prefix(backup_id)}{stem}.zst" + (".aead" if encrypted else "")


def run_backup(engine: Engine, settings: Settings, *, storage: Storage | None = None,
               source_storage: Storage | None = None, actor: str = "backup",
               progress: Progress | None = None) -> BackupOutcome:
    """Take one complete backup and add it to the catalog; raise, leaving no backup, if anything fails."""
    storage = storage if storage is not None else backup_storage(settings)
    source_storage = source_storage if source_storage is not None else open_storage(settings)
    crypt_key = backup_key(settings)
    with backup_lock(engine, settings):
        removed = cleanup_incomplete(engine, storage, actor=actor)
        if engine.dialect.name == "sqlite":
            sweep_sqlite_copies(engine)
        catalogued = sync_catalog(engine, storage)
        started = utcnow()
        backup_id = new_backup_id(started)
        clock = time.perf_counter()
        timings: dict[str, float] = {}
        try:
            manifest = _write_objects(engine, settings, storage, source_storage, backup_id, started, crypt_key,
                                      progress, timings)
            data = manifest.to_bytes()
            info = put_small(storage, manifest_key(backup_id), data)
        except BaseException as exc:
            _abandon(engine, storage, backup_id, actor, exc)
            raise
        with session_scope(engine) as session:
            session.add(catalog_row(manifest, storage, info.sha256 or ""))
            append_event(session, actor=actor, action="backup.completed", entity_type="backup", entity_id=backup_id,
                         details={"stored_bytes": manifest.stored_bytes, "objects": len(manifest.objects),
                                  "encrypted": manifest.encryption is not None,
                                  "erasure_ledger_position": manifest.erasure_ledger_position})
    return BackupOutcome(id=backup_id, manifest=manifest, seconds=time.perf_counter() - clock, timings=timings,
                         removed_incomplete=removed, catalogued=catalogued)


def _abandon(engine: Engine, storage: Storage, backup_id: str, actor: str, exc: BaseException) -> None:
    """Best effort after a failed run: delete its objects and audit why (the next run cleans up otherwise)."""
    with contextlib.suppress(Exception):
        delete_backup_objects(storage, backup_id)
    with contextlib.suppress(Exception), session_scope(engine) as session:
        append_event(session, actor=actor, action="backup.failed", entity_type="backup", entity_id=backup_id,
                     details={"error": type(exc).__name__, "message": " ".join(str(exc).split())[:500]})


def _write_objects(engine: Engine, settings: Settings, storage: Storage, source_storage: Storage, backup_id: str,
                   started: datetime, crypt_key: bytes | None, progress: Progress | None,
                   timings: dict[str, float]) -> Manifest:
    encrypted = crypt_key is not None
    objects: list[ObjectEntry] = []
    tick = time.perf_counter()
    dialect = engine.dialect.name
    tools = {"amas": _version("amas-ops"), "zstandard": _version("zstandard"),
             "cryptography": _version("cryptography"), "python": sys.version.split()[0]}
    store_key = _object_key(backup_id, "store.dump" if dialect == "postgresql" else "store.sqlite", encrypted)
    if dialect == "postgresql":
        tools["pg_dump"] = store_source.tool_version("pg_dump")
        with store_source.pg_dump_stream(engine) as (stream, snapshot, finish):
            entry = _put_stream(storage, store_key, stream, name="store", fmt="pg_dump-custom", settings=settings,
                                crypt_key=crypt_key, progress=progress)
            finish()
        digest_method = store_source.PG_DIGEST_METHOD
    else:
        source = store_source.sqlite_path(engine)
        with tempfile.TemporaryDirectory(prefix=SQLITE_COPY_PREFIX, dir=source.parent) as scratch:
            copy = Path(scratch) / "store.sqlite"
            store_source.sqlite_copy(source, copy)
            snapshot = store_source.sqlite_facts(copy)
            with copy.open("rb") as stream:
                entry = _put_stream(storage, store_key, stream, name="store", fmt="sqlite", settings=settings,
                                    crypt_key=crypt_key, progress=progress)
        digest_method = store_source.SQLITE_DIGEST_METHOD
    objects.append(entry)
    timings["store"] = round(time.perf_counter() - tick, 3)

    tick = time.perf_counter()
    with artifacts_source.archive_stream(source_storage) as (stream, index, thread, errors):
        try:
            entry = _put_stream(storage, _object_key(backup_id, "artifacts.tar", encrypted), stream, name="artifacts",
                                fmt="tar", settings=settings, crypt_key=crypt_key, progress=progress)
        finally:
            stream.close()
            thread.join()
        if errors:
            raise errors[0]
    objects.append(entry.model_copy(update={"details": index.details()}))
    timings["artifacts"] = round(time.perf_counter() - tick, 3)

    dvc = artifacts_source.dvc_index(source_storage)
    if dvc is not None:
        objects.append(_put_stream(storage, _object_key(backup_id, "dvc-index.jsonl", encrypted), io.BytesIO(dvc),
                                   name="dvc-index", fmt="jsonl", settings=settings, crypt_key=crypt_key,
                                   progress=None, details={"objects": dvc.count(b"\n")}))

    manifest = Manifest(
        id=backup_id, started_at=started, finished_at=utcnow(),
        source={"store": {"dialect": dialect, "server_version": snapshot.server_version,
                          "database": engine.url.database if dialect == "postgresql" else Path(engine.url.database or "").name},
                "storage": source_storage.url,
                # Artifact rows name their objects under this base (AMAS_STORAGE_URL as configured).
                "artifact_uri_base": settings.storage_url},
        tools=tools, compression={"algorithm": "zstd", "level": settings.backup.compression_level, "checksum": True},
        encryption=Encryption(chunk_size=CHUNK_SIZE, key_id=key_id(crypt_key)) if crypt_key is not None else None,
        objects=objects, digest_method=digest_method, tables=snapshot.digests,
        schema_revision=snapshot.schema_revision, erasure_ledger_position=snapshot.ledger_position,
    )
    if crypt_key is not None:
        manifest.sign(crypt_key)
    return manifest


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"
