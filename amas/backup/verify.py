"""Restore verification and restore: a backup counts only once it has been restored and checked.

``verify_backup`` runs, in order, and records every check with its time:

    manifest      present, parseable, its HMAC good (encrypted backups), the key id matches
    objects       every object listed is stored with the listed size
    store         fetch -> sha256 of the stored bytes -> decrypt -> decompress -> restore into a
                  scratch database (PostgreSQL: a throwaway database with unlogged tables and
                  ``pg_restore -j``; SQLite: a scratch file); the time this takes is the RTO
                  evidence (a real restore writes WAL as well: on 1 GB about 10% longer)
    digests       row count and content digest of every table equal the manifest's
    quality       the Great Expectations suites of ``expectations/`` for store tables
    erasures      the published erasure ledger is merged and re-applied in the scratch copy and
                  no subject it lists is present afterwards
    artifacts     the archive decodes and its index digest equals the manifest's
    dvc-index     decodes to the listed digest

then drops the scratch copy. Any failed check makes the verdict "unverified"; the catalog row
gets the verdict, each check and the RTO. ``restore_backup`` does the same into a real target.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from amas.backup import artifacts as artifacts_source
from amas.backup import store as store_source
from amas.backup.codec import CorruptObject, decode, key_id
from amas.backup.engine import backup_key, backup_storage, get_small, stored_ids, sync_catalog
from amas.backup.manifest import Manifest, ObjectEntry, manifest_key, parse_manifest
from amas.config import Settings
from amas.db.models import Backup, BackupStatus, utcnow
from amas.db.session import create_store_engine, session_scope
from amas.errors import AmasError
from amas.storage import Storage, open_storage, storage_for_url
from amas.storage.base import ObjectNotFound

COPY_CHUNK = 4 * 1024 * 1024
T = TypeVar("T")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0


@dataclass
class Verdict:
    backup_id: str
    ok: bool = True
    checks: list[Check] = field(default_factory=list)
    restore_seconds: float | None = None
    seconds: float = 0.0
    verified_at: datetime = field(default_factory=utcnow)

    def add(self, name: str, ok: bool, detail: str, seconds: float = 0.0) -> Check:
        check = Check(name, ok, detail, round(seconds, 3))
        self.checks.append(check)
        self.ok = self.ok and ok
        return check

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def summary(self) -> str:
        if self.ok:
            return f"verified: {len(self.checks)} checks passed, restore took {self.restore_seconds or 0:.1f} s"
        return "unverified: " + "; ".join(f"{c.name}: {c.detail}" for c in self.failed)

    def to_dict(self) -> dict[str, Any]:
        return {"backup_id": self.backup_id, "ok": self.ok, "summary": self.summary,
                "verified_at": self.verified_at.isoformat(), "restore_seconds": self.restore_seconds,
                "seconds": round(self.seconds, 3), "checks": [asdict(c) for c in self.checks]}


def _copy(source: BinaryIO, out: BinaryIO) -> None:
    while chunk := source.read(COPY_CHUNK):
        out.write(chunk)


class _Fetch:
    """Reads a stored object, hashing and counting what it reads."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self._hash.update(chunk)
        self.size += len(chunk)
        return chunk

    def check(self, entry: ObjectEntry) -> None:
        while self.read(COPY_CHUNK):
            pass  # the decoder may stop before the stored end; hash every stored byte
        if self.size != entry.size:
            raise CorruptObject(f"{entry.key}: {self.size:,} bytes stored, the manifest says {entry.size:,}")
        if self._hash.hexdigest() != entry.sha256:
            raise CorruptObject(f"{entry.key}: sha256 {self._hash.hexdigest()[:16]}… differs from the manifest's "
                                f"{entry.sha256[:16]}…")


def read_object(storage: Storage, entry: ObjectEntry, key: bytes | None, consume: Callable[[BinaryIO], T], *,
                prefetch: bool = False) -> T:
    """``consume`` the decoded object, then require the stored bytes to match the manifest.

    When decoding fails, the stored bytes are still read to the end: a sha256 that differs is
    the primary finding (the object changed after it was written) and is reported first.
    ``prefetch`` reads, hashes and decrypts in a thread beside the decompression (large objects).
    """
    with storage.open(entry.key) as raw:
        fetch = _Fetch(raw)
        stream: BinaryIO | None = None
        try:
            stream = decode(fetch, key=key, name=entry.key, prefetch=prefetch)  # type: ignore[arg-type]
            result = consume(stream)
        except CorruptObject as exc:
            if stream is not None:
                stream.close()  # the prefetching thread stops before the rest is read here
            try:
                fetch.check(entry)
            except CorruptObject as stored:
                raise CorruptObject(f"{stored}; decoding it failed too ({exc})") from None
            raise
        finally:
            if stream is not None:
                stream.close()
        fetch.check(entry)
        return result


def load_manifest(storage: Storage, backup_id: str, key: bytes | None) -> Manifest:
    """The backup's manifest, checked against the key; ``CorruptObject``/``AmasError`` say what is wrong."""
    try:
        data = get_small(storage, manifest_key(backup_id))
    except ObjectNotFound:
        raise CorruptObject(f"backup {backup_id} has no manifest.json: it is incomplete and does not exist") from None
    manifest = parse_manifest(data, manifest_key(backup_id))
    if manifest.id != backup_id:
        raise CorruptObject(f"manifest.json names backup {manifest.id}, not {backup_id}")
    if manifest.encryption is not None:
        if key is None:
            raise AmasError(f"backup {backup_id} is encrypted (key id {manifest.encryption.key_id}); "
                            "set AMAS_ENCRYPTION_KEY to the key it was made with")
        if key_id(key) != manifest.encryption.key_id:
            raise CorruptObject(f"wrong key: backup {backup_id} was encrypted with key id "
                                f"{manifest.encryption.key_id}, AMAS_ENCRYPTION_KEY has id {key_id(key)}")
        manifest.check_signature(key)
    return manifest


def _timed(verdict: Verdict, name: str) -> contextlib.AbstractContextManager[dict[str, Any]]:
    @contextlib.contextmanager
    def run() -> Iterator[dict[str, Any]]:
        note: dict[str, Any] = {"detail": "ok"}
        start = time.perf_counter()
        try:
            yield note
        except (AmasError, OSError) as exc:
            verdict.add(name, False, " ".join(str(exc).split())[:500], time.perf_counter() - start)
            note["failed"] = True
        else:
            verdict.add(name, True, note["detail"], time.perf_counter() - start)
    return run()


def _difference(found: Any, want: Any) -> str:
    if found is None:
        return "missing"
    if found.rows != want.rows:
        return f"{found.rows:,} rows, the manifest says {want.rows:,}"
    return f"{found.rows:,} rows as listed, but the content digest differs"


def _compare_digests(verdict: Verdict, manifest: Manifest, found: dict[str, Any], seconds: float) -> None:
    differ = [name for name, want in manifest.tables.items()
              if name not in found or found[name].rows != want.rows or found[name].digest != want.digest]
    extra = sorted(set(found) - set(manifest.tables))
    rows = sum(d.rows for d in manifest.tables.values())
    if differ or extra:
        parts = [f"{name} ({_difference(found.get(name), manifest.tables[name])})" for name in differ] + \
                [f"{name} (not in the manifest)" for name in extra]
        verdict.add("digests", False, "tables differ from the manifest: " + ", ".join(parts), seconds)
    else:
        verdict.add("digests", True, f"{len(manifest.tables)} tables, {rows:,} rows: counts and content digests "
                                     "equal the manifest's", seconds)


@dataclass
class Restored:
    """A restored copy; ``finish()`` records the "restore" check and the restore time (the RTO).

    The checks that read the copy run before ``finish()`` so their verdicts follow "restore" in
    the report; the restore time is taken when the restore itself ended.
    """

    engine: Engine
    finish: Callable[[], bool]


@contextlib.contextmanager
def restored_store(storage: Storage, manifest: Manifest, key: bytes | None, settings: Settings, verdict: Verdict,
                   *, target_url: str | None = None, clean: bool = False,
                   warm_up_quality: bool = False) -> Iterator[Restored | None]:
    """Fetch, check and restore the store object; yield the restored copy (None if that failed).

    Without ``target_url`` the copy is a scratch database or file, dropped when the block ends.
    ``warm_up_quality`` starts GX (seconds of imports) while pg_restore runs: not during the
    fetch, whose Python loop it would slow down more than it saves. A scratch copy's tables are
    unlogged (see ``store.pg_restore``); data and post-data stay in one pg_restore call: splitting
    off the post-data section to overlap the checks was measured slower (1 GB: restore plus
    digests 12.7 s against 11.3 s), as the split loses pg_restore's own overlap of one table's
    index builds with another's data.
    """
    entry = manifest.object("store")
    if entry is None:
        verdict.add("store", False, "the manifest lists no store object")
        yield None
        return
    dialect = manifest.source["store"]["dialect"]
    work = settings.core.home / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    where = ("a scratch " if target_url is None else "the target ") + ("database" if dialect == "postgresql" else "file")
    with tempfile.TemporaryDirectory(prefix="amas-restore-", dir=work) as scratch_dir, \
            contextlib.ExitStack() as stack:
        plain = Path(scratch_dir) / ("store.dump" if dialect == "postgresql" else "store.sqlite")
        start = time.perf_counter()
        with _timed(verdict, "fetch") as note:
            with plain.open("wb") as out:
                read_object(storage, entry, key, lambda stream: _copy(stream, out), prefetch=True)
            note["detail"] = (f"{entry.size:,} stored bytes match their sha256; {plain.stat().st_size:,} bytes "
                              f"after {'decryption and ' if key else ''}decompression")
        if note.get("failed"):
            yield None
            return
        restore_start = time.perf_counter()
        if warm_up_quality:
            from amas.quality import warm_up

            threading.Thread(target=warm_up, name="verify-gx-warm-up", daemon=True).start()
        try:
            if dialect == "postgresql":
                if target_url is None:
                    admin = settings.backup.scratch_url or _admin_url(settings)
                    url = stack.enter_context(store_source.scratch_database(
                        admin, store_source.scratch_name(manifest.id, time.time())))
                else:
                    url = target_url
                store_source.pg_restore(plain, url, jobs=settings.backup.threads or 1, clean=clean,
                                         scratch=target_url is None)
                engine = create_engine(url)
            else:
                url = target_url or f"sqlite:///{Path(scratch_dir) / 'restored.sqlite'}"
                store_source.install_file(plain, Path(make_url(url).database or ""))
                engine = create_store_engine(url)
        except (AmasError, OSError) as exc:
            verdict.add("restore", False, " ".join(str(exc).split())[:500], time.perf_counter() - restore_start)
            yield None
            return
        stack.callback(engine.dispose)
        restored_at = time.perf_counter()
        finished: list[bool] = []

        def finish() -> bool:
            if not finished:
                verdict.restore_seconds = round(restored_at - start, 3)
                verdict.add("restore", True, f"restored into {where} in {verdict.restore_seconds:.1f} s "
                            "(fetch, decode and restore)", restored_at - restore_start)
                finished.append(True)
            return True

        yield Restored(engine, finish)


def _admin_url(settings: Settings) -> str:
    return make_url(settings.database_url).set(database="postgres").render_as_string(hide_password=False)


def check_digests(engine: Engine, manifest: Manifest, verdict: Verdict) -> None:
    start = time.perf_counter()
    try:
        if engine.dialect.name == "postgresql":
            found = store_source.pg_digests(engine)
        else:
            found = store_source.sqlite_facts(Path(engine.url.database or "")).digests
    except Exception as exc:  # noqa: BLE001 - a restored copy that cannot be read is a failed check
        verdict.add("digests", False, f"cannot digest the restored copy: {' '.join(str(exc).split())[:300]}")
        return
    _compare_digests(verdict, manifest, found, time.perf_counter() - start)


def check_contents(restored: Restored, manifest: Manifest, settings: Settings, verdict: Verdict) -> bool:
    """Digests (database CPU) and the GX suites (our CPU) side by side.

    Records "restore", "digests" and "quality" in that order; whether the restore finished.
    """
    digests, quality = Verdict(verdict.backup_id), Verdict(verdict.backup_id)
    with ThreadPoolExecutor(1, thread_name_prefix="verify-quality") as pool:
        running = pool.submit(check_quality, restored.engine, settings, quality)
        check_digests(restored.engine, manifest, digests)
        running.result()
    done = restored.finish()
    for check in digests.checks + quality.checks:
        verdict.add(check.name, check.ok, check.detail, check.seconds)
    return done


def check_quality(engine: Engine, settings: Settings, verdict: Verdict) -> None:
    """The store suites (``meta.dataset: store.<table>``) on at most verify_sample_rows rows per table."""
    import pandas as pd

    from amas.quality import EXPECTATIONS_DIR, load_suite_definition, validate_frame

    start = time.perf_counter()
    limit = settings.backup.verify_sample_rows
    tables = set(store_source.table_names())
    results: list[str] = []
    failed: list[str] = []
    try:
        for path in sorted(EXPECTATIONS_DIR.glob("*.json")):
            definition = load_suite_definition(path.stem)
            dataset = str((definition.get("meta") or {}).get("dataset") or "")
            table = dataset.removeprefix("store.")
            if not dataset.startswith("store.") or table not in tables:
                continue
            quote = engine.dialect.identifier_preparer.quote
            with engine.connect() as conn:
                frame = pd.read_sql(text(f"SELECT * FROM {quote(table)} LIMIT :n"), conn, params={"n": limit})
            report = validate_frame(frame, path.stem, dataset=dataset, redact_samples=True)
            (results if report.success else failed).append(report.summary_line())
    except Exception as exc:  # noqa: BLE001 - reported as the check's failure
        verdict.add("quality", False, f"could not run the suites: {' '.join(str(exc).split())[:300]}",
                    time.perf_counter() - start)
        return
    if failed:
        verdict.add("quality", False, "; ".join(failed), time.perf_counter() - start)
    else:
        verdict.add("quality", True, "; ".join(results) or "no store suites", time.perf_counter() - start)


def check_erasures(engine: Engine, settings: Settings, verdict: Verdict, *, target_storage: Storage | None,
                   ledger_storage: Storage, source_storage_url: str = "") -> dict[str, int]:
    """Merge the published ledger into the restored store, re-apply it, and require no listed subject left.

    Artifact rows name their objects by the URL of the storage the backup was taken from
    (``source_storage_url``); their restored copies in ``target_storage`` are deleted by that key.
    """
    from sqlalchemy.orm import Session

    from amas.db.ledger import erasure_key
    from amas.gdpr.reapply import ledger_violations, published_ledger, reapply_ledger

    start = time.perf_counter()
    try:
        key = erasure_key(settings)
        entries = published_ledger(ledger_storage)
        with Session(engine) as session, session.begin():
            totals = reapply_ledger(session, key, storage=target_storage, entries=entries,
                                    storage_url=source_storage_url, actor="restore")
        with Session(engine) as session:
            left = ledger_violations(session, key)
    except Exception as exc:  # noqa: BLE001 - reported as the check's failure
        verdict.add("erasures", False, f"could not re-apply the erasure ledger: {' '.join(str(exc).split())[:300]}",
                    time.perf_counter() - start)
        return {}
    detail = (f"ledger of {len(entries)} published entries merged ({totals.get('ledger_entries_merged', 0)} new); "
              f"{totals.get('subjects', 0)} restored subjects erased again; {left} listed subjects present")
    verdict.add("erasures", left == 0, detail, time.perf_counter() - start)
    return totals


def check_archive(storage: Storage, manifest: Manifest, key: bytes | None, verdict: Verdict,
                  target: Storage | None = None) -> None:
    entry = manifest.object("artifacts")
    if entry is None:
        verdict.add("artifacts", False, "the manifest lists no artifacts object")
        return
    with _timed(verdict, "artifacts") as note:
        index = read_object(storage, entry, key,
                            lambda stream: artifacts_source.read_archive(stream, target, name=entry.key))
        want = entry.details
        if index.sha256 != want.get("index_sha256") or index.objects != want.get("objects"):
            raise CorruptObject(f"{entry.key}: {index.objects} objects whose index digest differs from the "
                                f"manifest's ({want.get('objects')} objects)")
        note["detail"] = f"{index.objects} objects, {index.bytes:,} bytes, index digest equal" + \
                         (f"; written to {target.url}" if target is not None else "")


def check_dvc_index(storage: Storage, manifest: Manifest, key: bytes | None, verdict: Verdict) -> None:
    entry = manifest.object("dvc-index")
    if entry is None:
        return
    with _timed(verdict, "dvc-index") as note:
        lines = read_object(storage, entry, key, lambda stream: [
            json.loads(line) for line in stream.read().splitlines() if line.strip()])
        note["detail"] = f"{len(lines)} DVC remote objects listed"


def _check_objects(storage: Storage, manifest: Manifest, verdict: Verdict) -> bool:
    problems: list[str] = []
    for entry in manifest.objects:
        try:
            info = storage.stat(entry.key)
        except ObjectNotFound:
            problems.append(f"{entry.key} is missing")
            continue
        if info.size != entry.size:
            problems.append(f"{entry.key} has {info.size:,} bytes, the manifest says {entry.size:,}")
    if problems:
        verdict.add("objects", False, "; ".join(problems))
        return False
    verdict.add("objects", True, f"{len(manifest.objects)} objects present with their listed sizes")
    return True


STALE_SCRATCH_SECONDS = 24 * 3600
"""Scratch copies older than this were left by a killed verification (none runs that long here)."""


def sweep_scratch(settings: Settings) -> None:
    """Remove scratch files and databases that killed verifications left behind."""
    now = time.time()
    work = settings.core.home / "tmp"
    for stale in work.glob("amas-restore-*") if work.is_dir() else []:
        if now - stale.stat().st_mtime > STALE_SCRATCH_SECONDS:
            shutil.rmtree(stale, ignore_errors=True)
    if make_url(settings.database_url).get_backend_name() == "postgresql" or settings.backup.scratch_url:
        with contextlib.suppress(Exception):  # best effort: the verification itself reports an unreachable server
            store_source.drop_stale_scratch(settings.backup.scratch_url or _admin_url(settings), now,
                                            STALE_SCRATCH_SECONDS)


def verify_backup(backup_id: str, settings: Settings, *, engine: Engine | None = None,
                  storage: Storage | None = None, record: bool = True) -> Verdict:
    """Restore ``backup_id`` into a scratch copy and check it; record the verdict in the catalog."""
    storage = storage if storage is not None else backup_storage(settings)
    sweep_scratch(settings)
    verdict = Verdict(backup_id)
    clock = time.perf_counter()
    key = None
    manifest = None
    try:
        key = backup_key(settings)
        manifest = load_manifest(storage, backup_id, key)
    except (AmasError, OSError) as exc:
        verdict.add("manifest", False, " ".join(str(exc).split())[:500])
    if manifest is not None:
        verdict.add("manifest", True, f"format {manifest.format}, {len(manifest.objects)} objects, "
                    f"{'encrypted, signature good' if manifest.encryption else 'not encrypted'}")
        if _check_objects(storage, manifest, verdict):
            with restored_store(storage, manifest, key, settings, verdict, warm_up_quality=True) as restored:
                if restored is not None and check_contents(restored, manifest, settings, verdict):
                    check_erasures(restored.engine, settings, verdict, target_storage=None,
                                   ledger_storage=open_storage(settings))
            check_archive(storage, manifest, key, verdict)
            check_dvc_index(storage, manifest, key, verdict)
    verdict.seconds = time.perf_counter() - clock
    if record and engine is not None:
        record_verdict(engine, storage, verdict)
    return verdict


def record_verdict(engine: Engine, storage: Storage, verdict: Verdict) -> None:
    from amas.db.audit import append_event

    sync_catalog(engine, storage)
    with session_scope(engine) as session:
        row = session.get(Backup, verdict.backup_id)
        if row is not None:
            row.status = BackupStatus.verified if verdict.ok else BackupStatus.unverified
            row.verified_at = verdict.verified_at
            row.verification = verdict.to_dict()
            row.rto_seconds = verdict.restore_seconds
        append_event(session, actor="backup-verify", action="backup.verified" if verdict.ok else "backup.unverified",
                     entity_type="backup", entity_id=verdict.backup_id,
                     details={"ok": verdict.ok, "failed": [c.name for c in verdict.failed],
                              "restore_seconds": verdict.restore_seconds})


@dataclass
class RestoreOutcome:
    verdict: Verdict
    target: str
    artifacts_target: str | None
    erasures: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "artifacts_target": self.artifacts_target, "erasures": self.erasures,
                **self.verdict.to_dict()}


def restore_backup(backup_id: str, target_url: str, settings: Settings, *, artifacts_url: str | None = None,
                   force: bool = False, storage: Storage | None = None) -> RestoreOutcome:
    """Restore into ``target_url`` (and the artifacts into ``artifacts_url``), verify it, re-apply erasures."""
    from amas.config import hide_url_password, normalise_database_url

    storage = storage if storage is not None else backup_storage(settings)
    try:
        target_url = normalise_database_url(target_url)
    except ValueError as exc:
        raise AmasError(f"--to: {exc}") from None
    key = backup_key(settings)
    manifest = load_manifest(storage, backup_id, key)
    dialect = manifest.source["store"]["dialect"]
    target = make_url(target_url)
    if target.get_backend_name() != dialect:
        raise AmasError(f"--to: backup {backup_id} is of a {dialect} store; give a {dialect} URL, "
                        f"not {target.get_backend_name()}")
    empty = store_source.pg_is_empty(target_url) if dialect == "postgresql" else \
        store_source.sqlite_is_empty(Path(target.database or ""))
    if not empty and not force:
        raise AmasError(f"--to: {hide_url_password(target_url)} is not empty; restoring would mix data. "
                        "Give an empty target, or --force to replace its contents")
    artifacts_target = storage_for_url(artifacts_url, settings.storage) if artifacts_url else None
    verdict = Verdict(backup_id)
    clock = time.perf_counter()
    verdict.add("manifest", True, f"format {manifest.format}, {len(manifest.objects)} objects")
    outcome = RestoreOutcome(verdict, hide_url_password(target_url), artifacts_target.url if artifacts_target else None)
    if _check_objects(storage, manifest, verdict):
        with restored_store(storage, manifest, key, settings, verdict, target_url=target_url,
                            clean=force and not empty) as restored:
            if restored is not None:
                digests = Verdict(backup_id)
                check_digests(restored.engine, manifest, digests)
                if restored.finish():
                    for check in digests.checks:
                        verdict.add(check.name, check.ok, check.detail, check.seconds)
                    if artifacts_target is not None:
                        check_archive(storage, manifest, key, verdict, target=artifacts_target)
                    outcome.erasures = check_erasures(
                        restored.engine, settings, verdict, target_storage=artifacts_target,
                        ledger_storage=open_storage(settings),
                        source_storage_url=str(manifest.source.get("artifact_uri_base") or ""))
    verdict.seconds = time.perf_counter() - clock
    return outcome


def select_backup(storage: Storage, backup_id: str) -> str:
    """``latest`` means the newest backup in storage; anything else must name one."""
    if backup_id != "latest":
        return backup_id
    complete = sorted(bid for bid, names in stored_ids(storage).items() if "manifest.json" in names)
    if not complete:
        raise AmasError(f"no complete backup in {storage.url}")
    return complete[-1]
