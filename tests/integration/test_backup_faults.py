"""Backups under fault: broken on purpose, killed midway, sent to failing S3, taken while writers write.

The gallery takes a good backup, breaks it in the local storage directory the way disks,
operators and attackers do, and states the verdict ``verify_backup`` must reach: which check
fails first and what its detail says. A verdict also lands in the catalog row. The other
tests prove the engine's promises: a run that dies or fails leaves nothing that counts as a
backup and the next run cleans up after it; transient S3 faults are survived; a backup taken
while rows are being written is one consistent snapshot.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, select, text

import amas.storage.s3
from amas.backup import catalog
from amas.backup.codec import key_id
from amas.backup.engine import run_backup, stored_ids, sync_catalog
from amas.backup.manifest import Manifest, backup_prefix, manifest_key
from amas.backup.verify import Verdict, select_backup, verify_backup
from amas.config import get_settings
from amas.db.models import AgentTask, AuditEvent, Backup, BackupStatus, DataSubject
from amas.db.session import create_store_engine, session_scope
from amas.errors import AmasError
from amas.storage import S3Storage, StorageUnavailable
from tests.plugins.backup import BackupEnv
from tests.plugins.faulty_http import FaultyProxy
from tests.plugins.s3 import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, REGION, S3Bucket, s3_client

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
DIALECTS = ("sqlite", "postgresql")


def _root() -> Path:
    """The local storage directory: backups live under its ``backups/``."""
    return Path(get_settings().storage_url)


def _rows(engine: Engine, model: type) -> int:
    with session_scope(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _catalog_row(engine: Engine, backup_id: str) -> Backup | None:
    with session_scope(engine) as session:
        return session.get(Backup, backup_id)




@dataclass
class Made:
    """A good backup just taken, and what a case needs to break it and to name it in a detail."""

    id: str
    manifest: Manifest
    key: bytes | None
    monkeypatch: pytest.MonkeyPatch
    facts: dict[str, str] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        """The file of object ``name`` (``store``, ``artifacts``) or of ``manifest``."""
        if name == "manifest":
            return _root() / manifest_key(self.id)
        entry = self.manifest.object(name)
        assert entry is not None, f"the backup has no {name} object"
        return _root() / entry.key


Damage = Callable[[Made], None]


def _nothing(made: Made) -> None:
    pass


def _truncate(name: str) -> Damage:
    def damage(made: Made) -> None:
        path = made.path(name)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return damage


def _truncate_and_fix_size(made: Made) -> None:
    _truncate("store")(made)
    size = made.path("store").stat().st_size
    _edit_manifest(lambda doc: _entry(doc, "store").update(size=size))(made)


def _flip(name: str) -> Damage:
    def damage(made: Made) -> None:
        path = made.path(name)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    return damage


def _delete(name: str) -> Damage:
    def damage(made: Made) -> None:
        made.path(name).unlink()
    return damage


def _entry(doc: dict, name: str) -> dict:
    return next(o for o in doc["objects"] if o["name"] == name)


def _edit_manifest(edit: Callable[[dict], object]) -> Damage:
    def damage(made: Made) -> None:
        path = made.path("manifest")
        doc = json.loads(path.read_bytes())
        edit(doc)
        path.write_text(json.dumps(doc, indent=2))
    return damage


def _bump_digest(doc: dict) -> None:
    table = doc["tables"]["data_subjects"]
    table["digest"] = str((int(table["digest"]) + 1) % 2**64)


def _bump_rows(doc: dict) -> None:
    doc["tables"]["data_subjects"]["rows"] += 1


def _write_manifest(data: bytes) -> Damage:
    def damage(made: Made) -> None:
        made.path("manifest").write_bytes(data)
    return damage


def _another_key(made: Made) -> None:
    other = os.urandom(32)
    made.monkeypatch.setenv("AMAS_ENCRYPTION_KEY", base64.b64encode(other).decode())
    get_settings.cache_clear()
    made.facts["other_key_id"] = key_id(other)


def _no_key(made: Made) -> None:
    made.monkeypatch.delenv("AMAS_ENCRYPTION_KEY")
    get_settings.cache_clear()


@dataclass(frozen=True)
class Broken:
    """One way to break a backup, and the verdict: the first check to fail and a regex its detail matches.

    The regex is a ``str.format`` template over the backup's facts (``id``, ``store``,
    ``artifacts``, ``manifest``, ``key_id``, ``other_key_id``), each inserted regex-escaped.
    ``check=None`` means the backup must verify.
    """

    name: str
    damage: Damage
    check: str | None
    detail: str = ""
    encrypted: bool = False
    dialects: tuple[str, ...] = DIALECTS


GALLERY = [
    # Untouched: verified, restore time recorded as the RTO.
    Broken("good", _nothing, None),
    # Untouched and encrypted: verified.
    Broken("good-encrypted", _nothing, None, encrypted=True, dialects=("postgresql",)),
    # Store object cut in half: the listing already shows a size other than the manifest's.
    Broken("truncated-store", _truncate("store"), "objects",
           r"{store} has [\d,]+ bytes, the manifest says [\d,]+"),
    # Cut in half and the manifest's size edited to match: the fetch finds the sha256 differs
    # (and the zstd frame unfinished).
    Broken("truncated-store-size-edited", _truncate_and_fix_size, "fetch",
           r"^{store}: sha256 \S+ differs from the manifest's .*truncated"),
    # One byte flipped, size unchanged: the fetch finds the sha256 differs.
    Broken("flipped-store-byte", _flip("store"), "fetch", r"^{store}: sha256 \S+ differs from the manifest's"),
    # One byte flipped in an encrypted store: the sha256 differs (and its chunk fails authentication).
    Broken("flipped-store-byte-encrypted", _flip("store"), "fetch",
           r"^{store}: sha256 \S+ differs from the manifest's", encrypted=True, dialects=("postgresql",)),
    # One byte flipped in the artifacts archive: the artifacts check fails, the store is fine.
    Broken("flipped-artifacts-byte", _flip("artifacts"), "artifacts",
           r"^{artifacts}: sha256 \S+ differs from the manifest's"),
    # The same, encrypted.
    Broken("flipped-artifacts-byte-encrypted", _flip("artifacts"), "artifacts",
           r"^{artifacts}: sha256 \S+ differs from the manifest's", encrypted=True, dialects=("postgresql",)),
    # Artifacts object deleted: named as missing before anything is fetched.
    Broken("missing-artifacts", _delete("artifacts"), "objects", r"{artifacts} is missing"),
    # No manifest: the backup is incomplete and does not exist.
    Broken("missing-manifest", _delete("manifest"), "manifest",
           r"backup {id} has no manifest\.json: it is incomplete and does not exist"),
    # Encrypted with one key, verified with another: "wrong key", naming both key ids, not "tampered".
    Broken("wrong-key", _another_key, "manifest",
           r"wrong key: backup {id} was encrypted with key id {key_id}, AMAS_ENCRYPTION_KEY has id {other_key_id}",
           encrypted=True),
    # Encrypted, no key configured: says the backup is encrypted and which key it needs.
    Broken("missing-key", _no_key, "manifest", r"backup {id} is encrypted \(key id {key_id}\)", encrypted=True),
    # Manifest digest of one table edited (row count unchanged): the digests check names that table.
    Broken("digest-edited", _edit_manifest(_bump_digest), "digests",
           r"tables differ from the manifest: data_subjects \(20 rows as listed, but the content digest differs\)"),
    # Manifest row count of one table edited: named with both counts.
    Broken("rows-edited", _edit_manifest(_bump_rows), "digests",
           r"tables differ from the manifest: data_subjects \(20 rows, the manifest says 21\)"),
    # An encrypted backup's manifest edited: its HMAC fails before any digest is trusted.
    Broken("digest-edited-encrypted", _edit_manifest(_bump_digest), "manifest",
           r"manifest\.json fails its HMAC", encrypted=True, dialects=("postgresql",)),
    # Manifest that is not JSON.
    Broken("manifest-not-json", _write_manifest(b"{this is not json"), "manifest",
           r"{manifest}: not a valid backup manifest \(\(document\): "),
    # Manifest without a required field.
    Broken("manifest-missing-field", _edit_manifest(lambda doc: doc.pop("tables")), "manifest",
           r"{manifest}: not a valid backup manifest \(tables: Field required\)"),
]


def _gallery_params() -> list[object]:
    return [pytest.param(dialect, case, id=f"{case.name}-{dialect}") for case in GALLERY for dialect in case.dialects]


@pytest.mark.parametrize(("store_url", "case"), _gallery_params(), indirect=["store_url"])
def test_broken_backup_gets_its_verdict(backup_env: BackupEnv, case: Broken, request: pytest.FixtureRequest,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    key = request.getfixturevalue("encryption_key") if case.encrypted else None
    outcome = run_backup(backup_env.engine, backup_env.settings)
    assert (outcome.manifest.encryption is not None) is case.encrypted
    made = Made(outcome.id, outcome.manifest, key, monkeypatch)
    case.damage(made)
    facts = {"id": made.id, "store": outcome.manifest.object("store").key,  # type: ignore[union-attr]
             "artifacts": outcome.manifest.object("artifacts").key,  # type: ignore[union-attr]
             "manifest": manifest_key(made.id), "key_id": key_id(key) if key else "", **made.facts}

    verdict = verify_backup(made.id, backup_env.settings, engine=backup_env.engine)

    row = _catalog_row(backup_env.engine, made.id)
    assert row is not None
    if case.check is None:
        assert verdict.ok, verdict.summary
        assert row.status is BackupStatus.verified
        assert row.rto_seconds is not None and row.rto_seconds > 0
        assert row.rto_seconds == verdict.restore_seconds
        assert row.verification["ok"] is True
        return
    _assert_first_failure(verdict, case.check, case.detail.format(**{k: re.escape(v) for k, v in facts.items()}))
    assert row.status is BackupStatus.unverified
    assert row.verified_at is not None
    assert row.verification["ok"] is False
    assert row.verification["summary"] == verdict.summary
    assert [c["name"] for c in row.verification["checks"] if not c["ok"]][0] == case.check
    if case.name == "missing-manifest":
        _assert_not_a_backup_and_cleaned_up(backup_env, made.id)


def _assert_first_failure(verdict: Verdict, check: str, detail: str) -> None:
    assert not verdict.ok, f"expected check {check!r} to fail, got: {verdict.summary}"
    first = verdict.failed[0]
    assert first.name == check, verdict.summary
    assert re.search(detail, first.detail), f"{first.detail!r} does not match {detail!r}"
    before = verdict.checks[: verdict.checks.index(first)]
    assert all(c.ok for c in before), verdict.summary


def _assert_not_a_backup_and_cleaned_up(env: BackupEnv, backup_id: str) -> None:
    """Without its manifest a backup is not listed as one, and the next run removes what is left."""
    storage = env.storage
    assert stored_ids(storage)[backup_id] and "manifest.json" not in stored_ids(storage)[backup_id]
    with pytest.raises(AmasError, match="no complete backup"):
        select_backup(storage, "latest")
    with session_scope(env.engine) as session:
        session.delete(session.get(Backup, backup_id))  # as if the catalog had never heard of it
    assert sync_catalog(env.engine, storage) == []
    assert _catalog_row(env.engine, backup_id) is None

    outcome = run_backup(env.engine, env.settings)

    assert outcome.removed_incomplete == [backup_id]
    assert backup_id not in stored_ids(storage)
    assert storage.exists(manifest_key(outcome.id))
    assert select_backup(storage, "latest") == outcome.id


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_verified_backup_whose_manifest_is_lost_stops_counting_once_cleaned_up(backup_env: BackupEnv) -> None:
    # The next run deletes the objects of a backup without a manifest; the catalog must then stop
    # calling it verified, or RPO is measured from a backup that no longer exists.
    engine, settings = backup_env.engine, backup_env.settings
    lost = run_backup(engine, settings).id
    assert verify_backup(lost, settings, engine=engine).ok
    (_root() / manifest_key(lost)).unlink()

    outcome = run_backup(engine, settings)

    assert outcome.removed_incomplete == [lost]
    assert lost not in stored_ids(backup_env.storage)
    row = _catalog_row(engine, lost)
    assert row is None or row.status not in (BackupStatus.verified, BackupStatus.completed), (
        f"backup {lost} has no objects left but the catalog still lists it as {row.status.value}")
    assert all(s.newest_verified != lost for s in catalog.status(catalog.backups(engine), settings))



KILLABLE = """
import pathlib, sys, time
from amas.backup.engine import run_backup
from amas.config import get_settings
from amas.db.session import create_store_engine

hold, marker = sys.argv[1], pathlib.Path(sys.argv[2])

def progress(name, size):
    # Called as the object's source is read; at the end of it the object is still being stored.
    if name == hold:
        marker.write_text(str(size))
        time.sleep(300)

settings = get_settings()
run_backup(create_store_engine(settings.database_url), settings, progress=progress)
"""


def _kill_midway(hold: str, work: Path) -> str:
    """Run a backup in another process, SIGKILL it while object ``hold`` is being stored; its id."""
    marker = work / "holding"
    log = work / "killed-backup.stderr"
    with log.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-c", KILLABLE, hold, str(marker)], env=dict(os.environ),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            if process.poll() is not None:
                pytest.fail(f"the backup process ended (exit {process.returncode}) before it could be killed: "
                            f"{log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the backup process did not reach {hold} within 60 s: {log.read_text()[-2000:]}")
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    started = [p.name for p in (_root() / "backups").iterdir()]
    assert len(started) == 1, started
    return started[0]


def _wait_for_advisory_locks_released(engine: Engine) -> None:
    """PostgreSQL ends a killed client's session (and its backup lock) once it sees the socket close."""
    deadline = time.monotonic() + 10
    with engine.connect() as conn:
        while conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
                                "(SELECT oid FROM pg_database WHERE datname = current_database())")).scalar():
            assert time.monotonic() < deadline, "the killed backup's advisory lock was never released"
            time.sleep(0.05)
            conn.rollback()


@pytest.mark.parametrize(("store_url", "hold"), [
    pytest.param("sqlite", "artifacts", id="sqlite-during-artifacts"),
    pytest.param("postgresql", "artifacts", id="postgresql-during-artifacts"),
    pytest.param("sqlite", "store", id="sqlite-during-store"),
], indirect=["store_url"])
def test_backup_killed_midway_leaves_no_backup_and_the_next_run_succeeds(
        backup_env: BackupEnv, hold: str, tmp_path: Path) -> None:
    engine, storage = backup_env.engine, backup_env.storage
    dead = _kill_midway(hold, tmp_path)

    assert not storage.exists(manifest_key(dead))
    assert "manifest.json" not in stored_ids(storage).get(dead, set())
    if hold == "artifacts":
        assert stored_ids(storage)[dead] == {_store_key(engine)}, "killed before the store object was complete"
    assert sync_catalog(engine, storage) == []
    assert _rows(engine, Backup) == 0
    _assert_first_failure(verify_backup(dead, backup_env.settings, engine=engine), "manifest", "has no manifest.json")
    assert _rows(engine, Backup) == 0
    if engine.dialect.name == "postgresql":
        _wait_for_advisory_locks_released(engine)

    outcome = run_backup(engine, backup_env.settings)

    if hold == "artifacts":
        assert outcome.removed_incomplete == [dead]
    assert dead not in stored_ids(storage)
    assert _backup_ids(engine) == [outcome.id]
    assert verify_backup(outcome.id, backup_env.settings, engine=engine).ok
    # Nothing of the killed run may stay behind on disk either: not its unfinished staging file in
    # the backup storage, not the scratch copy of a SQLite store (personal data nobody erases).
    left = _files_left_by(dead, engine)
    assert left == [], f"the killed backup left files that no run removes: {left}"


def _files_left_by(backup_id: str, engine: Engine) -> list[str]:
    """Files of a backup's directory (staging files included) and SQLite scratch copies, as paths."""
    places = [_root() / backup_prefix(backup_id)]
    if engine.dialect.name == "sqlite":
        places += Path(engine.url.database or "").parent.glob("amas-backup-*")
    return sorted(str(p) for place in places for p in ([place] if place.is_file() else place.rglob("*"))
                  if p.is_file())


def _store_key(engine: Engine) -> str:
    return "store.dump.zst" if engine.dialect.name == "postgresql" else "store.sqlite.zst"


def _backup_ids(engine: Engine) -> list[str]:
    with session_scope(engine) as session:
        return list(session.scalars(select(Backup.id)))




def _s3(proxy: FaultyProxy, bucket: S3Bucket) -> S3Storage:
    return S3Storage(bucket.name, endpoint_url=proxy.endpoint, region=REGION, access_key_id=FAKE_ACCESS_KEY_ID,
                     secret_access_key=SecretStr(FAKE_SECRET_ACCESS_KEY), multipart_threshold=5 * MiB,
                     multipart_chunksize=5 * MiB)


def _put_of(fragment: str) -> Callable[[str, str], bool]:
    """The single PUT of the object whose key contains ``fragment`` (not a part of a multipart upload)."""
    return lambda method, target: method == "PUT" and fragment in target and "uploadId=" not in target


def _part(number: int) -> Callable[[str, str], bool]:
    return lambda method, target: method == "PUT" and f"partNumber={number}&" in target + "&"


def _outcomes(proxy: FaultyProxy, match: Callable[[str, str], bool]) -> list[str]:
    return [outcome for method, target, outcome in proxy.log if match(method, target)]


def _moto_keys(bucket: S3Bucket, prefix: str = "") -> list[str]:
    listing = s3_client(bucket.endpoint).list_objects_v2(Bucket=bucket.name, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_backup_to_s3_survives_transient_faults(backup_env: BackupEnv, faulty_s3: FaultyProxy, s3_bucket: S3Bucket,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amas.storage.s3, "READ_TIMEOUT_SECONDS", 2.0)  # read when the client is built
    backup_env.storage.put("evidence/disk-image.bin", os.urandom(12 * MiB))  # artifacts: a 3-part upload
    storage = _s3(faulty_s3, s3_bucket)
    faulty_s3.fail_next(1, 500, _put_of("/store.dump.zst"))
    faulty_s3.fail_next(1, 503, _part(2))
    faulty_s3.delay_next(1, 6.0, _part(3))  # longer than the read timeout
    faulty_s3.fail_next(3, 500, _put_of("/manifest.json"))  # three in a row on the commit point
    injected = 1 + 1 + 1 + 3

    outcome = run_backup(backup_env.engine, backup_env.settings, storage=storage)

    assert faulty_s3.faulted == injected
    assert _outcomes(faulty_s3, _put_of("/store.dump.zst")) == ["error", "forwarded"]
    assert _outcomes(faulty_s3, _part(2)) == ["error", "forwarded"]
    part_three = _outcomes(faulty_s3, _part(3))
    assert part_three[0] == "delayed" and part_three[-1] == "forwarded", part_three
    assert _outcomes(faulty_s3, _put_of("/manifest.json")) == ["error"] * 3 + ["forwarded"]
    artifacts = outcome.manifest.object("artifacts")
    assert artifacts is not None
    head = s3_client(s3_bucket.endpoint).head_object(Bucket=s3_bucket.name, Key=artifacts.key)
    assert head["ETag"].strip('"').endswith("-3"), "the artifacts object was not a three-part upload"
    assert head["ContentLength"] == artifacts.size
    assert sorted(_moto_keys(s3_bucket)) == sorted([o.key for o in outcome.manifest.objects] +
                                                   [manifest_key(outcome.id)])
    assert s3_client(s3_bucket.endpoint).list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", []) == []

    faulty_s3.fail_next(1, 500, lambda method, target: method == "GET" and "/store.dump.zst" in target)
    verdict = verify_backup(outcome.id, backup_env.settings, engine=backup_env.engine, storage=storage)

    assert verdict.ok, verdict.summary
    assert faulty_s3.faulted == injected + 1
    assert _catalog_row(backup_env.engine, outcome.id).status is BackupStatus.verified  # type: ignore[union-attr]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_streamed_put_failing_every_attempt_fails_the_run_and_the_retried_run_succeeds(
        backup_env: BackupEnv, faulty_s3: FaultyProxy, s3_bucket: S3Bucket) -> None:
    # A streamed object (the pg_dump output cannot be read twice) gets the storage client's
    # attempts per request (3); a fault outlasting them fails this attempt of the run, which
    # leaves no backup, and the backup flow's task retries the whole run (5 s, then 30 s later).
    from flows._retries import retry_if_transient
    from flows.backup_flow import take_backup

    storage = _s3(faulty_s3, s3_bucket)
    faulty_s3.fail_next(amas.storage.s3.MAX_ATTEMPTS, 500, "PUT")
    with pytest.raises(StorageUnavailable):
        run_backup(backup_env.engine, backup_env.settings, storage=storage)
    with session_scope(backup_env.engine) as session:
        assert session.scalar(select(func.count()).select_from(Backup)) == 0
    assert faulty_s3.faulted == amas.storage.s3.MAX_ATTEMPTS

    class FailedState:
        def result(self) -> None:
            raise StorageUnavailable("S3 endpoint down")

    assert take_backup.retries == 2 and retry_if_transient(None, None, FailedState()) is True
    retried = run_backup(backup_env.engine, backup_env.settings, storage=storage)
    assert verify_backup(retried.id, backup_env.settings, engine=backup_env.engine, storage=storage).ok
    assert list(stored_ids(storage)) == [retried.id]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("when", ["from-the-start", "midway"])
def test_backup_to_s3_that_stays_down_fails_clearly_and_leaves_no_backup(
        backup_env: BackupEnv, faulty_s3: FaultyProxy, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch,
        when: str) -> None:
    monkeypatch.setattr(amas.storage.s3, "MAX_ATTEMPTS", 2)  # the same path, given up sooner
    engine = backup_env.engine
    storage = _s3(faulty_s3, s3_bucket)
    rows_before = _rows(engine, Backup)

    def progress(name: str, _size: int) -> None:
        # The store object is stored by now; storage goes away while the artifacts are sent.
        if name == "artifacts":
            faulty_s3.down()

    if when == "from-the-start":
        faulty_s3.down()
    with pytest.raises(StorageUnavailable) as caught:
        run_backup(engine, backup_env.settings, storage=storage, progress=progress)

    message = str(caught.value)
    assert faulty_s3.endpoint in message
    assert FAKE_SECRET_ACCESS_KEY not in message and FAKE_ACCESS_KEY_ID not in message
    assert _rows(engine, Backup) == rows_before
    faulty_s3.up()
    if when == "from-the-start":
        assert _outcomes(faulty_s3, lambda method, _target: method == "PUT") == []
        assert _moto_keys(s3_bucket) == []
        return
    with session_scope(engine) as session:
        failed = session.scalars(select(AuditEvent).where(AuditEvent.action == "backup.failed")).all()
        assert len(failed) == 1 and failed[0].details["error"] == "StorageUnavailable"
        assert FAKE_SECRET_ACCESS_KEY not in json.dumps(failed[0].details)
        failed_id = failed[0].entity_id
    assert failed_id is not None
    # The failed run could not delete its store object while S3 was down: the next run does.
    assert _moto_keys(s3_bucket, backup_prefix(failed_id)) != []

    outcome = run_backup(engine, backup_env.settings, storage=storage)

    assert outcome.removed_incomplete == [failed_id]
    assert _moto_keys(s3_bucket, backup_prefix(failed_id)) == []
    assert _backup_ids(engine) == [outcome.id]




class _Writer(threading.Thread):
    """Commits one subject and one task for it per transaction, on its own engine, until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(name="store-writer", daemon=True)
        self.engine = create_store_engine(url)
        self.committed = 0
        self.first = threading.Event()
        self._stop_writing = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self._stop_writing.is_set():
                n = self.committed
                with session_scope(self.engine) as session:
                    subject = DataSubject(external_ref=f"live-{n}", email=f"live{n}@example.org")
                    session.add(subject)
                    session.flush()
                    session.add(AgentTask(agent="forensics", subject_id=subject.id, case_id="LIVE"))
                self.committed += 1
                self.first.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
            self.first.set()

    def stop(self) -> None:
        self._stop_writing.set()
        self.join(timeout=30)
        self.engine.dispose()


def test_writes_during_a_backup_leave_a_consistent_copy(backup_env: BackupEnv) -> None:
    engine = backup_env.engine
    pairs = _rows(engine, AgentTask) - _rows(engine, DataSubject)
    writer = _Writer(backup_env.url)
    writer.start()
    try:
        assert writer.first.wait(30) and writer.error is None, writer.error
        committed_at_start = writer.committed
        subjects_at_start = _rows(engine, DataSubject)

        def progress(name: str, _size: int) -> None:
            # The snapshot is taken; hold the store object open while the writer goes on.
            if name == "store":
                time.sleep(0.5)

        outcome = run_backup(engine, backup_env.settings, progress=progress)
        subjects_at_end = _rows(engine, DataSubject)
        committed_during = writer.committed - committed_at_start
    finally:
        writer.stop()
    assert writer.error is None, writer.error

    assert committed_during > 10, f"only {committed_during} writes committed while the backup ran"
    tables = outcome.manifest.tables
    assert subjects_at_start <= tables["data_subjects"].rows < subjects_at_end
    # Each write adds a subject and its task together: one snapshot holds both or neither.
    assert tables["agent_tasks"].rows - tables["data_subjects"].rows == pairs
    verdict = verify_backup(outcome.id, backup_env.settings, engine=engine)
    assert verdict.ok, verdict.summary
    assert [c.ok for c in verdict.checks if c.name == "digests"] == [True]
